"""Bazel macros that run pytest test files as `py_test` targets.

Every `*_test.py` file becomes one `py_test` named after the file (`spec_test.py` ->
`:spec_test`). The test runs `//tools:pytest_main.py` on that file, with the repository's
`pyproject.toml` as pytest configuration and (by default) the root `conftest.py`, so it sees what
a plain `pytest` run at the repository root sees.

Typical BUILD file:

    load("//tools:pytest.bzl", "pytest_tests")

    pytest_tests(
        srcs = glob(["*_test.py"]),
        deps = [":tf_admm"],
        overrides = {"training_test.py": {"size": "medium"}},
    )

`tools/check_bazel_targets.py` evaluates these macros with a small Python stand-in for
Starlark, so keep them to plain `def`s, lists, dicts and `native.*` calls.
"""

_ENTRY = "//tools:pytest_entry.py"

def pytest_test(
        name,
        src = None,
        deps = [],
        data = [],
        size = "small",
        tags = [],
        conftest = True,
        pytest_args = [],
        **kwargs):
    """One `py_test` running pytest on one test file.

    Args:
      name: Target name.
      src: The test file, relative to the package; `name + ".py"` when omitted.
      deps: `py_library` targets the test imports (TensorFlow and other PyPI packages come
        from the virtualenv and need no deps).
      data: Files the test reads at run time.
      size: Bazel test size: "small" (pure functions, under a minute), "medium" (trains
        Keras models or writes files, up to 5 minutes), "large" (end-to-end recipes).
      tags: Extra tags, e.g. ["manual", "requires-network"].
      conftest: Whether the root conftest.py (TensorFlow on two virtual CPUs, fixtures)
        applies, as it does in a plain pytest run.
      pytest_args: Extra pytest arguments, e.g. ["-m", "not slow"].
      **kwargs: Passed to `py_test` (`timeout`, `shard_count`, `env`, ...).
    """
    if src == None:
        src = name + ".py"
    if not src.endswith("_test.py"):
        fail("Expected a test file named *_test.py; received: src=%s" % src)
    test_path = src
    if native.package_name():
        test_path = native.package_name() + "/" + src
    all_deps = []
    for dep in deps + ["//tools:pytest_main"] + (["//:conftest"] if conftest else []):
        if dep.startswith(":"):
            dep = "//%s%s" % (native.package_name(), dep)
        if dep not in all_deps:
            all_deps.append(dep)
    native.py_test(
        name = name,
        srcs = [_ENTRY, src],
        main = _ENTRY,
        args = [test_path] + pytest_args,
        deps = all_deps,
        data = data + ["//:pyproject.toml"],
        python_version = "PY3",
        srcs_version = "PY3",
        size = size,
        tags = tags,
        **kwargs
    )

def pytest_tests(
        srcs,
        deps = [],
        data = [],
        size = "small",
        tags = [],
        overrides = {},
        **kwargs):
    """One `pytest_test` per file in `srcs` (usually `glob(["*_test.py"])`).

    Args:
      srcs: Test files of this package.
      deps: Deps shared by every test.
      data: Data shared by every test.
      size: Default size (see `pytest_test`).
      tags: Tags shared by every test.
      overrides: Per file name, a dict of `pytest_test` arguments for that file alone;
        "deps", "data" and "tags" are added to the shared ones, anything else replaces.
      **kwargs: Passed to every `pytest_test`.
    """
    for src in overrides:
        if src not in srcs:
            fail("Expected overrides only for files in srcs; received: overrides key=%s" % src)
    for src in srcs:
        extra = dict(overrides.get(src, {}))
        test_kwargs = dict(kwargs)
        test_kwargs.update(extra)
        test_kwargs["deps"] = deps + extra.get("deps", [])
        test_kwargs["data"] = data + extra.get("data", [])
        test_kwargs["tags"] = tags + extra.get("tags", [])
        test_kwargs["size"] = extra.get("size", size)
        pytest_test(
            name = src[:-len(".py")],
            src = src,
            **test_kwargs
        )
