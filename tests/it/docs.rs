//! The README quotes no figure that the committed results do not hold: each passage that
//! quotes measurements stands between `<!-- figures: FILE -->` and `<!-- end figures -->`,
//! and every number in it (outside code spans) appears in that results file as written.

use std::path::Path;

/// The numbers of `text` as written (`3,000,000`, `99.9843`, `1.6`), code spans left out.
fn numbers(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    for (i, part) in text.split('`').enumerate() {
        if i % 2 == 1 {
            continue;
        }
        let mut current = String::new();
        let chars: Vec<char> = part.chars().collect();
        for (j, &c) in chars.iter().enumerate() {
            let inner = matches!(c, ',' | '.') && !current.is_empty() && chars.get(j + 1).is_some_and(char::is_ascii_digit);
            if c.is_ascii_digit() || inner {
                current.push(c);
            } else if !current.is_empty() {
                out.push(std::mem::take(&mut current));
            }
        }
        if !current.is_empty() {
            out.push(current);
        }
    }
    out
}

#[test]
fn the_readme_quotes_only_figures_that_its_results_files_hold() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let readme = std::fs::read_to_string(root.join("README.md")).expect("README.md");
    let mut blocks = 0;
    let mut rest = readme.as_str();
    while let Some(start) = rest.find("<!-- figures: ") {
        let after = &rest[start + "<!-- figures: ".len()..];
        let (file, body) = after.split_once(" -->").expect("a figures marker ends with -->");
        let (body, next) = body.split_once("<!-- end figures -->").expect("every figures block is closed");
        let results = std::fs::read_to_string(root.join(file)).unwrap_or_else(|e| panic!("{file}: {e}"));
        for n in numbers(body) {
            assert!(results.contains(&n), "README quotes {n} from {file}, which does not hold it:\n{body}");
        }
        blocks += 1;
        rest = next;
    }
    // The passages that quote measured runs are all in such blocks.
    {
        let quoting = "With the defaults and seed 1";
        let at = readme.find(quoting).unwrap_or_else(|| panic!("README no longer says {quoting:?}"));
        let opened = readme[..at].rfind("<!-- figures: ");
        let closed = readme[..at].rfind("<!-- end figures -->");
        assert!(opened.is_some() && opened > closed, "{quoting:?}: a passage quoting measurements outside a figures block");
    }
    assert!(blocks > 0, "no figures blocks in README.md");
}
