"""The repository stands on its own: nothing in it reads, runs or points a reader to a path outside it."""

import pathlib
import re
import subprocess

ROOT = pathlib.Path(__file__).resolve().parents[1]
TEXT_SUFFIXES = {".py", ".sh", ".md", ".yml", ".yaml", ".cfg", ".toml", ".txt", ".json", ""}
# relative paths that climb with ../ (the repository root is their limit), and the folders beside the repository
# that this project's machines have and a clone does not
CLIMBING = re.compile(r"(\]\()?(?<!\.)((?:\.\./)+[\w.-]*)")
BESIDE = re.compile(r"(?<![\w/])(?:/work/)?(?:shared[\"'\s/]+(?:bench|seeds|reference)|\.library)\b")


def tracked_text_files() -> list[pathlib.Path]:
    names = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True).stdout.split()
    files = [ROOT / name for name in names if (ROOT / name).suffix in TEXT_SUFFIXES and (ROOT / name).is_file()]
    return [path for path in files if path.name != "test_repository.py"]


def test_no_file_names_a_path_outside_the_repository():
    outside = []
    for path in tracked_text_files():
        try:
            text = path.read_text()
        except UnicodeDecodeError:
            continue
        for number, line in enumerate(text.splitlines(), 1):
            for match in CLIMBING.finditer(line):
                # a Markdown link is relative to its page; a path elsewhere is taken relative to its file where it
                # names a file there (a comment's "../planet.yml"), else to the repository root, where the README
                # runs every command
                beside_file = (path.parent / match.group(2)).resolve()
                from_file = bool(match.group(1)) or beside_file.exists()
                target = beside_file if from_file else (ROOT / match.group(2)).resolve()
                if ROOT not in (target, *target.parents):
                    outside.append(f"{path.relative_to(ROOT)}:{number}: {match.group(2)}")
            outside += [f"{path.relative_to(ROOT)}:{number}: {m.group(0)}" for m in BESIDE.finditer(line)]
    assert not outside, "paths outside the repository:\n" + "\n".join(outside)


def test_the_check_catches_what_it_should(tmp_path):
    # (the examples are assembled, so that this file itself names no such path)
    beside = "shared" + "/seeds/x.md"
    assert CLIMBING.search("PEER = '" + "../" + "elsewhere/peer.py'")
    assert BESIDE.search('ROOT.parent / "shared" / "bench"') and BESIDE.search(f"see /work/{beside}")
    assert not BESIDE.search("sb3_rssm/common/shared_stuff.py")
