"""The code in README.md, docs/guide.md and docs/keras3.md runs as written.

Each file's ```python blocks run in order in one namespace (a block may use what an earlier
block of the same file defined), in a fresh working folder. Other fenced blocks must say what
they are (```bash, ```text, ```json) so that no Python hides in an unlabelled block.
"""

import os
import re
import shlex
import subprocess
import sys
import traceback

import pytest

_REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_DOCS = ["README.md", "docs/guide.md", "docs/keras3.md"]
_FENCE = re.compile(r"^```(\S*)[^\n]*\n(.*?)^```[ \t]*$", re.MULTILINE | re.DOTALL)
_LANGUAGES = {"python", "bash", "text", "json"}


def fenced_blocks(text):
    """``(language, first line number of the code, code)`` of every fenced block."""
    return [
        (match.group(1), text.count("\n", 0, match.start(2)) + 1, match.group(2))
        for match in _FENCE.finditer(text)
    ]


def run_python_blocks(text, filename):
    """Executes the python blocks of ``text`` in order in one namespace; returns the namespace.

    Line numbers in tracebacks are those of the markdown file.
    """
    namespace = {"__name__": "__docs__"}
    for language, line, code in fenced_blocks(text):
        if language == "python":
            exec(compile("\n" * (line - 1) + code, filename, "exec"), namespace)  # noqa: S102
    return namespace


def _read(path):
    with open(os.path.join(_REPO, path), encoding="utf-8") as f:
        return f.read()


def test_blocks_are_found_with_their_language_and_line():
    text = "intro\n```python\nx = 1\n```\n\n```bash\nls\n```\n```\nplain\n```\n"
    assert fenced_blocks(text) == [
        ("python", 3, "x = 1\n"),
        ("bash", 7, "ls\n"),
        ("", 10, "plain\n"),
    ]


def test_a_raising_block_fails_with_the_markdown_line(tmp_path):
    text = "```python\nvalue = 2\n```\ntext\n```python\nassert value == 3, 'wrong'\n```\n"
    with pytest.raises(AssertionError, match="wrong") as error:
        run_python_blocks(text, "doc.md")
    last = traceback.extract_tb(error.value.__traceback__)[-1]
    assert (last.filename, last.lineno) == ("doc.md", 6)


def test_later_blocks_see_earlier_ones_and_bash_blocks_do_not_run():
    text = "```python\nvalue = 2\n```\n```bash\nraise SystemExit\n```\n```python\nvalue += 1\n```\n"
    assert run_python_blocks(text, "doc.md")["value"] == 3


@pytest.mark.parametrize("path", _DOCS)
def test_every_block_names_its_language(path):
    blocks = fenced_blocks(_read(path))
    assert any(language == "python" for language, _, _ in blocks), f"{path}: no python block"
    unlabelled = [(line, language) for language, line, _ in blocks if language not in _LANGUAGES]
    assert not unlabelled, f"{path}: blocks at these lines need one of {sorted(_LANGUAGES)}"


def test_readme_test_command_is_the_one_ci_runs():
    ci = _read(".ci/run")
    command = ".venv/bin/python -m pytest -n 2"
    assert f"\n{command}\n" in ci
    bash = [code for language, _, code in fenced_blocks(_read("README.md")) if language == "bash"]
    assert any(command in [" ".join(shlex.split(line)) for line in b.splitlines()] for b in bash)


def test_readme_plan_printouts_are_what_plan_prints():
    import tf_admm
    from tf_admm import testing

    spec = tf_admm.Spec(default=tf_admm.Rule(sparsity=0.9))
    expected = str(tf_admm.plan(testing.text_classifier(), spec))
    blocks = [code for language, _, code in fenced_blocks(_read("README.md")) if language == "text"]
    plans = [b for b in blocks if b.startswith("Plan for model")]
    assert plans == [expected + "\n"]


def test_readme_keras3_block_runs_on_jax(tmp_path):
    # The README says its Keras 3 block runs on JAX as written; Keras fixes its backend at the
    # first import, so the block runs in a subprocess with KERAS_BACKEND=jax.
    blocks = [
        code
        for language, _, code in fenced_blocks(_read("README.md"))
        if language == "python" and code.startswith("import keras")
    ]
    assert len(blocks) == 1
    script = blocks[0] + "\nassert keras.backend.backend() == 'jax'\nprint('ran on jax')\n"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTEST_", "KERAS_"))}
    path = os.pathsep.join(p for p in (_REPO, env.get("PYTHONPATH")) if p)
    env.update(KERAS_BACKEND="jax", PYTHONPATH=path, CUDA_VISIBLE_DEVICES="")
    result = subprocess.run(
        [sys.executable, "-c", script],
        cwd=str(tmp_path),
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )
    assert result.returncode == 0 and "ran on jax" in result.stdout, result.stderr[-3000:]


@pytest.mark.parametrize("path", _DOCS)
def test_python_blocks_run(path, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # files the blocks write land here
    run_python_blocks(_read(path), os.path.join(_REPO, path))


_LINK = re.compile(r"\]\(([^)\s]+)\)")


def github_anchor(heading):
    """The fragment GitHub gives a markdown heading (lower case, punctuation dropped)."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def test_github_anchor_drops_punctuation_and_keeps_hyphens():
    assert github_anchor("Pruning + quantization: LeNet-5 on mnist") == (
        "pruning--quantization-lenet-5-on-mnist"
    )
    assert github_anchor("Pruning at 71.2x: the README's") == "pruning-at-712x-the-readmes"


@pytest.mark.parametrize("path", _DOCS)
def test_relative_links_point_at_files_and_headings(path):
    broken = []
    for target in _LINK.findall(_read(path)):
        if re.match(r"[a-z]+:", target):
            continue  # http(s) and other schemes are not checked offline
        file, _, anchor = target.partition("#")
        resolved = os.path.normpath(os.path.join(os.path.dirname(path), file)) if file else path
        if not os.path.exists(os.path.join(_REPO, resolved)):
            broken.append(target)
        elif anchor:
            headings = re.findall(r"^#+ (.*)$", _read(resolved), re.MULTILINE)
            if anchor not in {github_anchor(h) for h in headings}:
                broken.append(target)
    assert not broken, f"{path}: links to missing files or headings: {broken}"
