//! The Python client (`clients/python`) inside `cargo test`: its unittest
//! suite against this build's `relais` binary, and a check that the package
//! installs with pip. They need Debian's `python3`, and for the install
//! `python3-pip`, `python3-setuptools` and `python3-wheel` (`.ci/run`
//! installs them); without them they fail saying so. `RELAIS_PYTHON`
//! names another interpreter than the system's `python3`.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// The repository root (this crate is `crates/relais-cli`).
fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .expect("repository root")
}

/// The interpreter: `$RELAIS_PYTHON`, else the system's `/usr/bin/python3`
/// (Debian's, with the packages `.ci/run` installs: another `python3` first
/// in `PATH`, say pyenv's, may lack `wheel`), else `python3` from `PATH`.
fn interpreter() -> String {
    std::env::var("RELAIS_PYTHON").unwrap_or_else(|_| {
        let system = Path::new("/usr/bin/python3");
        if system.exists() {
            system.display().to_string()
        } else {
            "python3".to_string()
        }
    })
}

/// Runs `python3 args` in `dir` with `env`; its output, or a panic saying
/// python3 is missing.
fn python3(args: &[&str], dir: &Path, env: &[(&str, &Path)]) -> Output {
    let mut command = Command::new(interpreter());
    command
        .args(args)
        .current_dir(dir)
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .env("PYTHONUNBUFFERED", "1");
    for (key, value) in env {
        command.env(key, value);
    }
    command.output().unwrap_or_else(|e| {
        panic!("cannot run python3 ({e}): the Python client's tests need Debian's python3")
    })
}

fn text(output: &Output) -> String {
    format!(
        "exit status: {}\n--- stdout:\n{}\n--- stderr:\n{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let name = entry.file_name();
        if name == "__pycache__" || name.to_string_lossy().ends_with(".egg-info") {
            continue;
        }
        let target = to.join(&name);
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), target).unwrap();
        }
    }
}

#[test]
fn python_client_unittest_suite_passes_against_this_server() {
    let root = repo_root();
    let bin = Path::new(env!("CARGO_BIN_EXE_relais"));
    let src = root.join("clients/python/src");
    let output = python3(
        &[
            "-m",
            "unittest",
            "discover",
            "-s",
            "clients/python/tests",
            "-v",
        ],
        &root,
        &[("RELAIS_BIN", bin), ("PYTHONPATH", &src)],
    );
    assert!(
        output.status.success(),
        "the Python client's tests failed:\n{}",
        text(&output)
    );
}

#[test]
fn python_client_installs_with_pip() {
    let root = repo_root();
    let tmp = tempfile::Builder::new()
        .prefix("relais-pip-")
        .tempdir()
        .expect("a temporary directory");
    // A copy: building in place would leave build/ and *.egg-info in the
    // source tree.
    let project = tmp.path().join("project");
    for part in ["pyproject.toml", "README.md"] {
        std::fs::create_dir_all(&project).unwrap();
        std::fs::copy(root.join("clients/python").join(part), project.join(part)).unwrap();
    }
    copy_dir(&root.join("clients/python/src"), &project.join("src"));
    let site = tmp.path().join("site");
    // What building needs without build isolation: setuptools, and before
    // setuptools 70.1 wheel (for bdist_wheel). setuptools is imported
    // before pip: after it, it can refuse to load.
    let check = python3(
        &[
            "-c",
            "import setuptools, pip\n\
             v = tuple(int(x) for x in setuptools.__version__.split('.')[:2])\n\
             if v < (70, 1): import wheel",
        ],
        &root,
        &[],
    );
    assert!(
        check.status.success(),
        "installing the Python client with {} needs pip, setuptools and, for setuptools older \
         than 70.1, wheel (Debian: python3-pip python3-setuptools python3-wheel; or set \
         RELAIS_PYTHON to an interpreter that has them):\n{}",
        interpreter(),
        text(&check)
    );
    let install = python3(
        &[
            "-m",
            "pip",
            "install",
            "--no-deps",
            "--no-build-isolation",
            "--no-index",
            "--disable-pip-version-check",
            "--no-input",
            "--target",
            site.to_str().unwrap(),
            project.to_str().unwrap(),
        ],
        &root,
        &[],
    );
    assert!(
        install.status.success(),
        "pip install of clients/python failed:\n{}",
        text(&install)
    );
    // The installed package, not the source tree, answers the import; the
    // wire-format tests pass against it.
    let tests = root.join("clients/python/tests");
    let import = python3(
        &[
            "-c",
            "import relais, relais.aio, os; print(os.path.dirname(relais.__file__)); \
             print(relais.__version__)",
        ],
        &tests,
        &[("PYTHONPATH", &site)],
    );
    assert!(import.status.success(), "{}", text(&import));
    let printed = String::from_utf8_lossy(&import.stdout);
    let mut lines = printed.lines();
    assert_eq!(
        lines.next().map(Path::new),
        Some(site.join("relais").as_path()),
        "{}",
        text(&import)
    );
    assert!(site.join("relais/py.typed").is_file(), "py.typed installed");
    let unit = python3(
        &["-m", "unittest", "test_protocol"],
        &tests,
        &[("PYTHONPATH", &site)],
    );
    assert!(unit.status.success(), "{}", text(&unit));
}
