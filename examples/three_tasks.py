"""Three tasks on scikit-learn's digits: 0-3, then 4-6, then 7-9 (no download needed)."""
import torch
from sklearn.datasets import load_digits

import crl


@crl.register_scenario("three-tasks", "digits 0-3, then 4-6, then 7-9", kind="supervised")
def three_tasks(cfg):
    digits = load_digits()
    x = torch.tensor(digits.data, dtype=torch.float32) / 16.0  # 1797 images of 8x8 pixels, flattened
    y = torch.tensor(digits.target)
    is_train = torch.arange(len(y)) % 5 != 0  # 80 % train, 20 % test
    tasks = []
    for classes in [(0, 1, 2, 3), (4, 5, 6), (7, 8, 9)]:
        mine = torch.isin(y, torch.tensor(classes))
        tasks.append(crl.SupervisedTask(
            name=f"digits{classes[0]}-{classes[-1]}",
            train=torch.utils.data.TensorDataset(x[mine & is_train], y[mine & is_train]),
            test=torch.utils.data.TensorDataset(x[mine & ~is_train], y[mine & ~is_train]),
            classes=classes,
        ))
    return crl.Scenario("three-tasks", tasks)
