"""What ``crl compare`` says about which runs its groups hold: two runs of one group with the same
seed are not independent samples (warned on stderr, noted in the table), and groups whose configs
differ only by a value's type (1 vs '1') keep distinct labels. Real config.yaml and event files."""
from __future__ import annotations

import csv
from pathlib import Path

from _tb_runs import write_run
from crl.cli import main
from crl.compare import compare


def run(root: Path, name: str, seed: int, final: float, **config) -> Path:
    return write_run(root, name, {"eval/a/score": [(0, 0.0), (100, final)]}, seed=seed, **config)


def test_repeated_seed_in_a_group_is_warned_and_noted_but_kept(tmp_path, capsys):
    runs = tmp_path / "runs"
    twice = [run(runs, "none-s0", 0, 1.0, norm="none"), run(runs, "none-s0-copy", 0, 3.0, norm="none"),
             run(runs, "none-s1", 1, 5.0, norm="none")]
    for seed in range(3):
        run(runs, f"nap-s{seed}", seed, 2.0, norm="nap")
    out = tmp_path / "cmp"
    assert main(["compare", str(runs), "--out", str(out)]) == 0
    err = [line for line in capsys.readouterr().err.splitlines() if "seed" in line and "fewer than" not in line]
    # one line for the one group with a repeated seed, naming the group, the seed and both run directories
    assert len(err) == 1, err
    assert err[0].startswith("warning: crl compare: group norm=none: seed 0 is in 2 runs (")
    assert f"{twice[0].resolve()}, {twice[1].resolve()}" in err[0] and str(twice[2]) not in err[0]
    assert "nap" not in err[0]
    md = (out / "final_values.md").read_text()
    notes = md.split("Notes:", 1)[1]
    assert f"- norm=none: seed 0 is in 2 runs ({twice[0].resolve()}, {twice[1].resolve()})" in notes
    assert "norm=nap" not in notes  # distinct seeds: no note
    # the statistics still count every run (mean of 1, 3, 5), and the runs cell says how many seeds
    assert "| norm=none | `eval/a/score` | 3 (2 seeds) | mean [a] | 3 | [" in md
    assert "| norm=nap | `eval/a/score` | 3 | mean [a] | 2 | [" in md
    with open(out / "final_values.csv", newline="") as fh:
        seeds = {r["group"]: (r["n_runs"], r["n_seeds"]) for r in csv.DictReader(fh)}
    assert seeds == {"norm=none": ("3", "2"), "norm=nap": ("3", "3")}


def test_distinct_seeds_get_no_warning_and_no_note(tmp_path, capsys):
    runs = tmp_path / "runs"
    for seed in range(5):
        run(runs, f"s{seed}", seed, float(seed))
    out = tmp_path / "cmp"
    assert main(["compare", str(runs), "--out", str(out)]) == 0
    assert capsys.readouterr().err == ""
    md = (out / "final_values.md").read_text()
    assert "Notes:" not in md and "seeds)" not in md


def test_two_copies_of_one_seed_say_one_seed(tmp_path):
    runs = tmp_path / "runs"
    run(runs, "s0", 0, 1.0)
    run(runs, "s0-copy", 0, 3.0)
    out = tmp_path / "cmp"
    assert main(["compare", str(runs), "--out", str(out)]) == 0
    assert "| 2 (1 seed) |" in (out / "final_values.md").read_text()


def test_int_and_str_values_of_a_field_keep_two_distinct_labels(tmp_path):
    runs = tmp_path / "runs"
    as_int = [run(runs, f"int-s{seed}", seed, 1.0, lr=1) for seed in range(2)]
    as_str = [run(runs, f"str-s{seed}", seed, 9.0, lr="1") for seed in range(2)]
    result = compare([str(runs)], out=tmp_path / "cmp", resamples=200)
    # before: both groups were labelled 'lr=1' and the second replaced the first (2 runs silently lost)
    assert result["groups"] == {"lr=1": [p.resolve() for p in as_int], "lr='1'": [p.resolve() for p in as_str]}
    rows = {r["group"]: r["value"] for r in result["rows"]}
    assert rows == {"lr=1": 1.0, "lr='1'": 9.0}


def test_labels_stay_unquoted_when_the_values_do_not_collide(tmp_path):
    runs = tmp_path / "runs"
    run(runs, "a", 0, 1.0, norm="none", lr=1)
    run(runs, "b", 0, 2.0, norm="nap", lr="2")
    result = compare([str(runs)], out=tmp_path / "cmp", resamples=200)
    assert sorted(result["groups"]) == ["lr=1, norm=none", "lr=2, norm=nap"]


def test_ignore_merges_groups_that_differ_only_in_the_named_fields_and_notes_it(tmp_path, capsys):
    runs = tmp_path / "runs"
    run(runs, "a-s0", 0, 1.0, channels_last=True)
    run(runs, "a-s1", 1, 3.0, channels_last=False)
    run(runs, "b-s0", 0, 5.0, channels_last=True, norm="nap")
    assert len(compare([str(runs)], out=tmp_path / "split", resamples=200)["groups"]) == 3
    out = tmp_path / "cmp"
    assert main(["compare", str(runs), "--out", str(out), "--ignore", "channels_last"]) == 0
    printed = capsys.readouterr().out
    assert "in 2 group(s)" in printed and "channels_last" not in printed.split("Notes:")[0]
    md = (out / "final_values.md").read_text()
    assert "| 2 | mean [a] | 2 | [" in md  # the two channels_last runs: one group, mean of 1 and 3
    assert "grouped across --ignore channels_last (False, True)" in md.split("Notes:", 1)[1]


def test_ignore_of_a_field_no_run_has_is_one_line_and_writes_nothing(tmp_path, capsys):
    runs = tmp_path / "runs"
    run(runs, "a-s0", 0, 1.0, channels_last=True)
    out = tmp_path / "cmp"
    assert main(["compare", str(runs), "--out", str(out), "--ignore", "chanels_last"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["error: crl compare: --ignore: 'chanels_last' is not a config field of these runs; "
                   "did you mean 'channels_last'?"]
    assert not out.exists()
