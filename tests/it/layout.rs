//! The shape of `control/`: one home per concept, kept so. The store is where the SQL lives (no
//! query is written or run outside `control/src/store/`), and no file of `control/src/` grows
//! past 900 lines.

use std::path::{Path, PathBuf};

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())).flatten() {
        let path = entry.path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

fn control_files() -> Vec<(PathBuf, String)> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("control/src");
    let mut files = Vec::new();
    rust_files(&root, &mut files);
    files.sort();
    assert!(files.len() > 20, "control/src has {} files", files.len());
    files
        .into_iter()
        .map(|f| {
            let text = std::fs::read_to_string(&f).unwrap_or_else(|e| panic!("{}: {e}", f.display()));
            (f.strip_prefix(&root).map(Path::to_path_buf).unwrap_or(f), text)
        })
        .collect()
}

/// Whether a line writes or runs SQL: a sqlx query call, or a string that opens a statement.
fn sql_on(line: &str) -> bool {
    let code = line.split("//").next().unwrap_or("");
    if ["sqlx::query", "query_as(", "query_scalar(", ".execute(&", ".fetch_one(", ".fetch_all(", ".fetch_optional("].iter().any(|p| code.contains(p)) {
        return true;
    }
    code.split('"').skip(1).step_by(2).any(|s| {
        let s = s.trim_start();
        ["SELECT ", "INSERT INTO ", "UPDATE ", "DELETE FROM ", "WITH ", "CREATE TABLE", "BEGIN"].iter().any(|k| s.starts_with(k))
    })
}

#[test]
fn no_query_is_written_or_run_outside_the_store() {
    let mut outside = Vec::new();
    for (path, text) in control_files() {
        if path.starts_with("store") {
            continue;
        }
        for (n, line) in text.lines().enumerate() {
            if sql_on(line) {
                outside.push(format!("control/src/{}:{}: {}", path.display(), n + 1, line.trim()));
            }
        }
    }
    assert!(outside.is_empty(), "SQL outside control/src/store/ ({} lines):\n{}", outside.len(), outside.join("\n"));
    // The check sees SQL where it is: the store has plenty.
    let store_lines = control_files()
        .into_iter()
        .filter(|(p, _)| p.starts_with("store"))
        .flat_map(|(_, t)| t.lines().map(String::from).collect::<Vec<_>>())
        .filter(|l| sql_on(l))
        .count();
    assert!(store_lines > 100, "only {store_lines} SQL lines found in the store: the check has gone blind");
}

#[test]
fn no_file_of_control_is_over_900_lines() {
    let long: Vec<String> = control_files()
        .into_iter()
        .map(|(p, t)| (p, t.lines().count()))
        .filter(|(_, n)| *n > 900)
        .map(|(p, n)| format!("control/src/{}: {n} lines", p.display()))
        .collect();
    assert!(long.is_empty(), "files over 900 lines:\n{}", long.join("\n"));
}
