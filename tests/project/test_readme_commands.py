"""The README and docs/ against the code: the commands they show parse, the configs they show load
real data, their links lead somewhere, and the README stays short enough to finish."""

import glob
import os
import re
import shlex

import numpy as np
import pytest
import yaml
from PIL import Image

from conftest import ROOT
from trainer import config, submit, task
from trainer.data import load_splits
from trainer.errors import UserError
from trainer.tune import space

VARS = {"$PROJECT": "my-project", "$REGION": "us-central1", "$BUCKET": "gs://my-bucket",
        "$SA": "sa@my-project.iam.gserviceaccount.com", "$(git rev-parse HEAD)": "abc123"}
README = os.path.join(ROOT, "README.md")
DOCS = sorted(glob.glob(os.path.join(ROOT, "docs", "*.md")))


def _read(path: str) -> str:
    with open(path, encoding="utf-8") as f:
        return f.read()


def _section(text: str, heading: str) -> str:
    """From `heading` to the next heading of the same or a higher level."""
    lines = text.splitlines(keepends=True)
    start = lines.index(heading + "\n")
    level = len(heading.split()[0])
    fenced = False
    for end in range(start + 1, len(lines)):
        fenced ^= lines[end].startswith("```")
        marks = re.match(r"(#+) ", lines[end])
        if not fenced and marks and len(marks.group(1)) <= level:
            return "".join(lines[start:end])
    return "".join(lines[start:])


def _blocks(text: str, lang: str = "") -> list[str]:
    """The bodies of the fenced code blocks opened with ```lang."""
    found, body, opened = [], None, None
    for line in text.splitlines(keepends=True):
        if line.startswith("```"):
            if body is None:
                body, opened = [], line[3:].strip()
            else:
                if opened == lang:
                    found.append("".join(body))
                body = None
        elif body is not None:
            body.append(line)
    return found


def _commands_in(text: str) -> list[str]:
    commands = []
    for block in _blocks(text):
        for line in block.replace("\\\n", " ").splitlines():
            for name, value in VARS.items():
                line = line.replace(name, value)
            if line.strip():
                commands.append(" ".join(line.split()))
    return commands


def _cloud_commands() -> list[str]:
    """The README's cloud section and all of docs/cloud.md."""
    return (_commands_in(_section(_read(README), "## The cloud in brief"))
            + _commands_in(_read(os.path.join(ROOT, "docs", "cloud.md"))))


def _all_commands() -> list[str]:
    return [c for path in [README, *DOCS] for c in _commands_in(_read(path))]


def _module_args(prefix: str, commands: list[str]) -> list[list[str]]:
    found = []
    for command in commands:
        if f"-m {prefix}" not in command:
            continue
        words = shlex.split(command.removeprefix("$ ").rstrip("&"), comments=True)
        while words and "=" in words[0] and not words[0].startswith("-"):
            words = words[1:]  # leading VAR=value assignments
        if words[:3] == ["python", "-m", prefix]:
            found.append(words[3:])
    return found


# ---------------------------------------------------------------------------------------------
# The cloud: submit, task, gcloud and Cloud Build commands as the code defines them.


def test_the_cloud_docs_show_submit_task_gcloud_and_cloud_build():
    commands = " ".join(_cloud_commands())
    for needle in ("python -m trainer.submit", "python -m trainer.task", "gcloud builds submit",
                   "gcloud ai custom-jobs create", "gcloud ai custom-jobs stream-logs",
                   "python -m gcp_storage_emulator start"):
        assert needle in commands, needle


def test_submit_commands_parse():
    calls = _module_args("trainer.submit", _cloud_commands())
    assert len(calls) >= 4
    for args in calls:
        try:
            submit.main.parse(args)
        except UserError as exc:
            pytest.fail(f"docs: python -m trainer.submit {' '.join(args)}: {exc}")


def test_gcloud_and_log_commands_are_the_ones_submit_prints():
    commands = _cloud_commands()
    create = next(c for c in commands if c.startswith("gcloud ai custom-jobs create"))
    (args,) = [a for a in _module_args("trainer.submit", commands) if "--gcloud_yaml" in a]
    submit.main.parse(args)
    parsed = submit.FLAGS
    assert create == submit.gcloud_command(parsed, parsed.display_name, parsed.gcloud_yaml)
    logs = next(c for c in commands if c.startswith("gcloud ai custom-jobs stream-logs"))
    assert logs == "gcloud ai custom-jobs stream-logs JOB_ID --project=my-project --region=us-central1"


def test_cloud_build_commands_name_real_substitutions():
    builds = [c for c in _cloud_commands() if c.startswith("gcloud builds submit")]
    assert len(builds) >= 2  # the README's and docs/cloud.md's
    defined = set(yaml.safe_load(_read(os.path.join(ROOT, "cloudbuild.yaml")))["substitutions"])
    for build in builds:
        assert "--config cloudbuild.yaml" in build
        given = re.search(r"--substitutions=(\S+)", build).group(1)
        for pair in given.split(","):
            key = pair.split("=")[0]
            assert key == "COMMIT_SHA" or key in defined, key


# ---------------------------------------------------------------------------------------------
# Training commands anywhere in the README and docs/.


def test_task_commands_use_defined_flags():
    calls = [args for name in ("trainer.task", "trainer.train_model_local", "trainer.train_model_cloud")
             for args in _module_args(name, _all_commands())]
    assert len(calls) >= 8
    for args in calls:
        for word in args:
            if word.startswith("--"):
                assert word[2:].split("=")[0] in task.FLAGS, word


def test_task_commands_on_shipped_configs_load():
    """`--config local/configs/X.yaml --set ...` as shown: the file exists and the overrides are keys
    it accepts."""
    loaded = 0
    for args in _module_args("trainer.task", _all_commands()):
        path = args[args.index("--config") + 1] if "--config" in args else None
        if path is None or not path.startswith("local/configs/"):
            continue
        overrides = [args[i + 1] for i, word in enumerate(args) if word == "--set"]
        config.load(os.path.join(ROOT, path), overrides)
        loaded += 1
    assert loaded >= 2


def test_the_two_commands_are_the_makefiles():
    text = _read(README)
    section = _section(text, "## Two commands")
    assert _blocks(section)[0].split("\n")[:2] == ["make demo", "make test"]
    makefile = _read(os.path.join(ROOT, "Makefile"))
    demo = re.search(r"^demo:.*\n((?:\t.*\n)+)", makefile, re.M).group(1)
    test = re.search(r"^test:.*\n((?:\t.*\n)+)", makefile, re.M).group(1)
    # What the README says each one runs is what its recipe runs.
    assert "-m trainer.train_model_local" in demo and "python -m trainer.train_model_local" in section
    assert "-m pytest -n $(TEST_WORKERS) --dist loadfile --no-loadscope-reorder tests" in test
    assert re.search(r"^TEST_WORKERS \?= 2$", makefile, re.M)
    assert "`pytest -n 2 --dist loadfile\n--no-loadscope-reorder tests`" in section
    assert "`TEST_WORKERS=0`" in section
    assert "apt-get install" in test and "chromium" in test and "chromium" in section
    assert "constraints.txt" in makefile and "constraints.txt" in section


def test_the_files_started_first_exist():
    # a renamed or removed file would silently fall back to its collection place
    from conftest import LONGEST_FIRST

    missing = [name for name in LONGEST_FIRST if not os.path.isfile(os.path.join(ROOT, "tests", name))]
    assert not missing and len(set(LONGEST_FIRST)) == len(LONGEST_FIRST), missing


# ---------------------------------------------------------------------------------------------
# Train on your own data, seed by seed: each YAML shown, laid over the config the section starts
# from, loads real files in that layout.


def _merge(base: dict, extra: dict) -> dict:
    out = dict(base)
    for key, value in extra.items():
        out[key] = _merge(out.get(key) or {}, value) if isinstance(value, dict) else value
    return out


def _seed_sections() -> dict[str, str]:
    own = _section(_read(README), "## Your data, as you have it")
    return {m.group(1): _section(own, m.group(0))
            for m in re.finditer(r"^### (Seed \d{3})\b.*$", own, re.M)}


def _seed_config(section: str) -> tuple[dict, dict]:
    """The shipped config a seed's section starts from, and the YAML it lays over it."""
    (name,) = list(dict.fromkeys(re.findall(r"`(\w+\.yaml)`", section)))[:1]
    base = yaml.safe_load(_read(os.path.join(ROOT, "local", "configs", name)))
    (block,) = [b for b in _blocks(section, "yaml") if "data:" in b]
    return base, yaml.safe_load(block)


def _write_layout(data: dict, folder: str) -> int:
    """Small real files in the layout `data` describes; returns the sample count."""
    rng = np.random.default_rng(0)
    fmt = data["format"]
    if fmt == "csv":
        n, columns = 20, data["label_columns"]
        rows = [",".join([data["path_column"], *columns])]
        for i in range(n):
            np.save(os.path.join(folder, f"img{i:02d}.npy"), rng.normal(size=(32, 32)).astype(np.float32))
            rows.append(",".join([f"img{i:02d}.npy", *(f"{v:.3f}" for v in rng.uniform(1, 7, len(columns)))]))
        path = os.path.join(folder, "lattices.csv")
        with open(path, "w") as f:
            f.write("\n".join(rows) + "\n")
        data["train"] = path
        return n
    if fmt == "hdf5":
        import h5py

        n = max(data.get("train_rows", [0, 0])[1], data.get("test_rows", [0, 0])[1])
        path = os.path.join(folder, "cubes.h5")
        with h5py.File(path, "w") as f:
            f[data["x_key"]] = rng.normal(size=(n, 8, 8)).astype(np.float32)
            f[data["y_key"]] = rng.normal(size=n).astype(np.float32)
        data["train"] = path
        return n
    if fmt == "image_folder":
        for name in ("circle", "square", "triangle"):
            os.makedirs(os.path.join(folder, name))
            for i in range(6):
                pixels = rng.integers(0, 255, (40, 30, 3), dtype=np.uint8)
                Image.fromarray(pixels).save(os.path.join(folder, name, f"{i}.png"))
        data["train"] = folder
        return 18
    raise AssertionError(f"no test layout for data.format {fmt}")


def test_every_seed_has_its_section():
    assert sorted(_seed_sections()) == [f"Seed {i:03d}" for i in range(5)]


@pytest.mark.parametrize("seed", ["Seed 000", "Seed 002", "Seed 004"])
def test_a_seeds_config_reads_its_layout(seed, tmp_path):
    base, extra = _seed_config(_seed_sections()[seed])
    raw = _merge(base, extra)
    n = _write_layout(raw["data"], str(tmp_path))
    raw["output"] = {"dir": str(tmp_path / "runs")}
    splits = load_splits(config.from_dict(raw, seed))
    sizes = [len(part) for part in splits.present.values()]  # a split of 0 is left out
    assert all(sizes) and sum(sizes) <= n
    d = raw["data"]
    if d["format"] == "csv":
        assert splits.task == "regression" and splits.train.y.shape[1] == len(d["label_columns"])
    if "test_rows" in d:
        assert len(splits.test) == d["test_rows"][1] - d["test_rows"][0]
        assert sum(sizes) == d["test_rows"][1] - d["train_rows"][0]
    if d["format"] == "image_folder":
        assert splits.class_names == ["circle", "square", "triangle"]
        assert splits.train.view.sample_shape == (*d["image_size"], 3)


def test_seed_003s_grid_is_a_valid_space():
    section = _seed_sections()["Seed 003"]
    (grid,) = [b for b in _blocks(section, "yaml") if "grid.yaml" in b]
    base = config.load(os.path.join(ROOT, "local", "configs", "digits.yaml"))
    parsed = space.parse(yaml.safe_load(grid), base, "README")
    assert [p.key for p in parsed.params] == ["train.learning_rate", "train.batch_size"]
    assert parsed.grid_only and not parsed.pruning.enabled  # every combination, to its end
    (args,) = _module_args("trainer.tune", _commands_in(section))
    assert args[args.index("--config") + 1] == "local/configs/digits.yaml"


def test_seed_001s_commands_name_convert_and_task_flags():
    section = _seed_sections()["Seed 001"]
    commands = _commands_in(section)
    (convert, again) = _module_args("trainer.convert", commands)
    assert "--video" in convert and "--labels" in convert
    (train, retrain) = _module_args("trainer.task", commands)
    out = convert[convert.index("--out") + 1]
    assert f"data.train={out}train-*.npz" in train  # the shards convert writes: <split>-NNNNN.npz
    assert "data.split_by=group" in train
    # The curation loop: the review predict writes is what convert reads back, and the new
    # shards train with the first ones.
    from trainer import convert as convert_mod
    from trainer.predict import command as predict

    (curate,) = _module_args("trainer.predict", commands)
    predict.main.parse(curate)
    convert_mod.main.parse(again)
    review = again[again.index("--review") + 1]
    assert review == curate[curate.index("--review_out") + 1] + "review.csv"
    new_out = again[again.index("--out") + 1]
    assert any(f"{new_out}train-*.npz" in word and f"{out}train-*.npz" in word
               for word in retrain)


# ---------------------------------------------------------------------------------------------
# Links and length.


def _slug(heading: str) -> str:
    """GitHub's anchor for a heading."""
    text = heading.strip().lower().replace("`", "")
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def _anchors(path: str) -> set[str]:
    text = re.sub(r"```.*?```", "", _read(path), flags=re.S)
    return {_slug(m.group(1)) for m in re.finditer(r"^#+ (.*)$", text, re.M)}


def _relative_links(path: str) -> list[str]:
    text = re.sub(r"```.*?```", "", _read(path), flags=re.S)
    links = re.findall(r"\[[^\]]*\]\(([^)\s]+)\)", text)
    return [link for link in links if not re.match(r"[a-z]+:", link)]


def test_every_relative_link_points_to_an_existing_file_and_heading():
    checked = 0
    for path in [README, *DOCS]:
        for link in _relative_links(path):
            target, _, anchor = link.partition("#")
            full = os.path.normpath(os.path.join(os.path.dirname(path), target)) if target else path
            where = f"{os.path.relpath(path, ROOT)}: ({link})"
            assert os.path.exists(full), where
            if anchor and full.endswith(".md"):
                assert anchor in _anchors(full), where
            checked += 1
    assert checked >= 20


def test_the_readme_links_every_doc():
    links = {os.path.normpath(os.path.join(ROOT, link.partition("#")[0]))
             for link in _relative_links(README)}
    assert set(DOCS) <= links
    assert len(DOCS) >= 7


def test_the_readme_stays_short():
    lines = _read(README).count("\n")
    assert lines < 300, f"README.md has {lines} lines; move detail to docs/"


def test_no_issue_numbers_in_the_readme_or_docs():
    for path in [README, *DOCS]:
        assert not re.search(r"\bissues? #?\d+", _read(path), re.I), path
