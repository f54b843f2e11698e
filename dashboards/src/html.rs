//! The HTML of the built-in dashboard: escaping and the page frame.
//!
//! [`esc`] escapes text for HTML content and attribute values, [`url`] percent-encodes a path
//! segment or a query value, and [`layout`] is the whole page: its title, a header linking the
//! [`SECTIONS`] (the active one underlined), the body, and a self-refresh when asked for.

use std::fmt::Write as _;

/// Escapes text for HTML content and attribute values.
pub fn esc(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// Percent-encodes a path segment or a query value.
pub fn url(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for b in text.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
            out.push(b as char);
        } else {
            let _ = write!(out, "%{b:02X}");
        }
    }
    out
}

const STYLE: &str = "body{font-family:system-ui,sans-serif;margin:0;color:#1d232a;background:#f6f7f9}\
header{background:#1d232a;color:#fff;padding:.6rem 1.2rem;display:flex;gap:1.2rem;align-items:center}\
header a{color:#cfe3ff;text-decoration:none}header b{margin-right:1rem}main{padding:1rem 1.2rem;max-width:80rem}\
table{border-collapse:collapse;background:#fff;margin:.5rem 0 1.2rem;font-size:.9rem}td,th{border-bottom:1px solid #e3e6ea;padding:.3rem .6rem;text-align:left}\
th{background:#eef1f4}.tiles{display:flex;gap:.8rem;flex-wrap:wrap}.tile{background:#fff;padding:.6rem 1rem;border-radius:6px;min-width:9rem}\
.tile b{display:block;font-size:1.5rem}.charts{display:flex;flex-wrap:wrap;gap:.8rem}.chart{background:#fff;border-radius:6px;padding:.4rem}\
.bad{color:#b3261e}.good{color:#1b7f3b}.muted{color:#68717c}code{background:#eef1f4;padding:0 .2rem}";

/// The dashboard's sections, as (link, name).
pub const SECTIONS: [(&str, &str); 6] =
    [("/", "Overview"), ("/ui/regions", "Regions"), ("/ui/tenants", "Tenants"), ("/ui/alerts", "Alerts"), ("/ui/triage", "Triage"), ("/metrics", "Metrics")];

/// A whole page: `body` (HTML) under a header linking the sections, `active` underlined.
/// With `refresh`, the page reloads itself every `refresh` seconds.
pub fn layout(title: &str, active: &str, body: &str, refresh: Option<u32>) -> String {
    let mut nav = String::new();
    for (href, name) in SECTIONS {
        if name == active {
            let _ = write!(nav, "<a href=\"{href}\"><u>{name}</u></a>");
        } else {
            let _ = write!(nav, "<a href=\"{href}\">{name}</a>");
        }
    }
    let refresh = refresh.map(|s| format!("<meta http-equiv=\"refresh\" content=\"{s}\">")).unwrap_or_default();
    format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>{} · Cohort</title>{refresh}<style>{STYLE}</style></head>\
         <body><header><b>Cohort</b>{nav}</header><main>{body}</main></body></html>",
        esc(title),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_is_escaped_for_html_and_urls() {
        assert_eq!(esc("<a href=\"x\">&'"), "&lt;a href=&quot;x&quot;&gt;&amp;&#39;");
        assert_eq!(url("a b/c?é"), "a%20b%2Fc%3F%C3%A9");
    }

    #[test]
    fn a_page_has_its_title_sections_and_refresh() {
        let page = layout("A <b>", "Tenants", "<p>x</p>", Some(15));
        assert!(page.contains("<title>A &lt;b&gt; · Cohort</title>"));
        assert!(page.contains("<a href=\"/ui/tenants\"><u>Tenants</u></a>"));
        assert!(page.contains("content=\"15\""));
        assert!(!layout("t", "", "", None).contains("refresh"));
    }
}
