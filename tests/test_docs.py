"""The docs a user meets: a README on a budget, tables printed from the code (a planted
stale row is caught), and links that lead somewhere (a planted dead one is caught)."""

import os
import shutil

from rlhf_jax import docs

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
README_LINES = 200


def test_the_readme_stays_within_its_budget():
    with open(os.path.join(ROOT, "README.md")) as f:
        n = len(f.read().splitlines())
    assert n <= README_LINES, f"README.md has {n} lines; move detail to docs/ (budget {README_LINES})"


def test_every_generated_table_is_what_the_code_prints_now():
    assert docs.sync(check=True) == [], "stale tables: python -m rlhf_jax.docs"


def copy_docs(tmp_path):
    """README.md and docs/ copied (to plant things in), the rest of the checkout linked."""
    shutil.copy(os.path.join(ROOT, "README.md"), tmp_path / "README.md")
    shutil.copytree(os.path.join(ROOT, "docs"), tmp_path / "docs")
    for name in ("studies", "tpu", "bench", "experiments"):
        os.symlink(os.path.join(ROOT, name), tmp_path / name)
    return tmp_path


def test_a_planted_stale_row_is_found_and_rewritten(tmp_path):
    root = copy_docs(tmp_path)
    readme = root / "README.md"
    text = readme.read_text()
    planted = text.replace("| `raft` | `best_of_k`", "| `raft` | `best_of_three`", 1)
    assert planted != text
    readme.write_text(planted)
    assert docs.sync(str(root), check=True) == ["README.md: generated:methods"]
    docs.sync(str(root))
    assert readme.read_text() == text


def test_links_lead_somewhere_and_a_planted_dead_one_is_found(tmp_path):
    assert docs.dead_links() == []
    root = copy_docs(tmp_path)
    guide = root / "docs" / "studies.md"
    guide.write_text(guide.read_text() + "\n[gone](methods.md#no-such-section) [also](../nothing.md)\n")
    assert docs.dead_links(str(root)) == [
        "docs/studies.md: methods.md#no-such-section",
        "docs/studies.md: ../nothing.md",
    ]
    assert docs.anchor("Online methods") == "online-methods" and docs.anchor("GPUs and TPU pods") == "gpus-and-tpu-pods"
