"""A run that starts from a finished sibling's stages (`studies.twins`): which configs count
as the same training, and a stage directory started from the twin's checkpoints."""

import json
import os

from rlhf_jax.studies import twins


def stage(directory: str, split: str, name: str, lr: float = 3e-4, data_dir: str = "/data") -> dict:
    return {
        "name": name,
        "model": {"init_from": f"{directory}/generator", "d_model": 128},
        "data": {"eval_split": split, "data_dir": data_dir, "solutions": f"{directory}/labels/uniform"},
        "optim": {"learning_rate": lr},
    }


def test_the_same_training_is_equal_up_to_the_runs_directory_name_and_held_out_split():
    val, test = "/w/cells/right_validation.seed0", "/w/cells/right.seed0"
    theirs = stage(val, "validation", "right_validation_orm")
    assert twins.same_training(theirs, stage(test, "test", "right_orm"), val, test)
    assert not twins.same_training(theirs, stage(test, "test", "right_orm", lr=1e-3), val, test)  # another rate
    assert not twins.same_training(theirs, stage(test, "test", "right_orm", data_dir="/other"), val, test)
    # a path outside the twin's directory is not moved, even when it starts with its name
    theirs = {**stage(val, "validation", "a"), "model": {"init_from": f"{val}2/generator", "d_model": 128}}
    ours = {**stage(test, "test", "b"), "model": {"init_from": f"{test}2/generator", "d_model": 128}}
    assert not twins.same_training(theirs, ours, val, test)


def test_a_twin_is_a_finished_sibling_of_the_same_config_and_its_checkpoints_arrive_whole(tmp_path):
    ours_dir, done, running = (str(tmp_path / n) for n in ("right.seed0", "right_validation.seed0", "other"))
    ours = {"name": "right", "generator": stage(ours_dir, "test", "g"), "pool": 256, "labelled": 8}
    for directory, split, finished in ((done, "validation", True), (running, "validation", False)):
        os.makedirs(os.path.join(directory, "orm", "checkpoints", "20"))
        theirs = {**ours, "name": "v", "generator": stage(directory, split, "g"), "pool": 64}
        for path, value in (("config.json", theirs), ("orm/config.json", stage(directory, split, "orm"))):
            with open(os.path.join(directory, path), "w") as f:
                json.dump(value, f)
        if finished:
            for path in ("summary.json", "orm/summary.json"):
                with open(os.path.join(directory, path), "w") as f:
                    f.write("{}")
            with open(os.path.join(directory, "orm", "metrics.jsonl"), "w") as f:
                f.write('{"step": 20, "loss": 0.5}\n')
    # the unfinished sibling is passed over; the pool (evaluation only) is set aside
    assert twins.find(ours, ours_dir, (running, done), aside=("pool",)) == done
    assert twins.find(ours, ours_dir, (running, done)) == ""
    assert twins.find({**ours, "labelled": 16}, ours_dir, (running, done), aside=("pool",)) == ""
    assert twins.trained(done, "orm", stage(ours_dir, "test", "orm"), ours_dir) == os.path.join(done, "orm")
    assert twins.trained(done, "orm", stage(ours_dir, "test", "orm", lr=1.0), ours_dir) == ""
    assert twins.trained(done, "prm", stage(ours_dir, "test", "prm"), ours_dir) == ""  # it has no such stage

    here = os.path.join(ours_dir, "orm")
    os.makedirs(here + "/checkpoints.adopting/5")  # a copy cut off part way is made again
    twins.adopt(here, os.path.join(done, "orm"))
    assert sorted(os.listdir(here)) == ["checkpoints", "metrics.jsonl"]
    assert os.listdir(os.path.join(here, "checkpoints")) == ["20"]
    os.makedirs(os.path.join(done, "orm", "checkpoints", "40"))
    twins.adopt(here, os.path.join(done, "orm"))  # checkpoints of its own already: left as they are
    assert os.listdir(os.path.join(here, "checkpoints")) == ["20"]
