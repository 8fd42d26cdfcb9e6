//! `report.html`: the Markdown report rendered as one self-contained page — inline CSS, the
//! plots as inline SVG, no scripts and no external resources.
//!
//! The converter handles the Markdown the report writes (and extra sections should stick to):
//! `#` headings, paragraphs, `- ` lists, `|` tables, `` `code` ``, `**bold**`, and image lines
//! `![alt](plots/<loss>.svg)`, which are replaced by the SVG given for that path.

use super::plot::xml_escape;
use std::collections::BTreeMap;

const CSS: &str = "body{font-family:sans-serif;max-width:1200px;margin:2em auto;padding:0 1em;color:#222;line-height:1.4}\
table{border-collapse:collapse;margin:0.8em 0;font-size:13px}th,td{border:1px solid #ccc;padding:2px 6px}\
th{background:#f2f2f2}td.n{text-align:right}code{background:#f5f5f5;padding:0 2px;font-size:12px;word-break:break-all}\
h2{border-bottom:1px solid #ddd;margin-top:1.6em}figure{margin:0.5em 0}";

/// Inline Markdown: code spans, bold, then escaping of the rest.
fn inline(s: &str) -> String {
    let mut out = String::new();
    for (i, part) in s.split('`').enumerate() {
        if i % 2 == 1 {
            out += &format!("<code>{}</code>", xml_escape(part));
        } else {
            for (j, b) in xml_escape(part).split("**").enumerate() {
                if j % 2 == 1 {
                    out += &format!("<strong>{b}</strong>");
                } else {
                    out += b;
                }
            }
        }
    }
    out
}

fn cells(line: &str) -> Vec<&str> {
    let t = line.trim().trim_start_matches('|').trim_end_matches('|');
    t.split('|').map(str::trim).collect()
}

/// Render `markdown` as a standalone page titled `title`; `svgs` maps an image path (as
/// written in the Markdown) to the SVG inlined in its place.
pub fn page(title: &str, markdown: &str, svgs: &BTreeMap<String, String>) -> String {
    let mut o = format!(
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>{}</title><style>{CSS}</style></head><body>\n",
        xml_escape(title)
    );
    let lines: Vec<&str> = markdown.lines().collect();
    let mut i = 0;
    let mut para: Vec<&str> = Vec::new();
    let flush = |para: &mut Vec<&str>, o: &mut String| {
        if !para.is_empty() {
            *o += &format!("<p>{}</p>\n", inline(&para.join(" ")));
            para.clear();
        }
    };
    while i < lines.len() {
        let l = lines[i];
        let t = l.trim_start();
        if t.is_empty() {
            flush(&mut para, &mut o);
            i += 1;
        } else if let Some(h) = t.strip_prefix('#') {
            flush(&mut para, &mut o);
            let level = 1 + h.chars().take_while(|c| *c == '#').count();
            let text = h.trim_start_matches('#').trim();
            o += &format!("<h{level}>{}</h{level}>\n", inline(text));
            i += 1;
        } else if t.starts_with("![") {
            flush(&mut para, &mut o);
            let path = t
                .split_once("](")
                .and_then(|(_, r)| r.strip_suffix(')'))
                .unwrap_or("");
            match svgs.get(path) {
                Some(svg) => o += &format!("<figure>{svg}</figure>\n"),
                None => o += &format!("<p>(plot {} not available)</p>\n", xml_escape(path)),
            }
            i += 1;
        } else if t.starts_with('|') {
            flush(&mut para, &mut o);
            o += "<table>\n";
            let head = cells(t);
            o += "<tr>";
            for c in &head {
                o += &format!("<th>{}</th>", inline(c));
            }
            o += "</tr>\n";
            i += 1;
            let mut right = vec![false; head.len()];
            if i < lines.len() && lines[i].trim_start().starts_with("|-")
                || i < lines.len() && lines[i].trim_start().starts_with("|:")
            {
                for (k, c) in cells(lines[i]).iter().enumerate() {
                    if k < right.len() {
                        right[k] = c.ends_with(':');
                    }
                }
                i += 1;
            }
            while i < lines.len() && lines[i].trim_start().starts_with('|') {
                o += "<tr>";
                for (k, c) in cells(lines[i]).iter().enumerate() {
                    let cls = if right.get(k) == Some(&true) {
                        " class=\"n\""
                    } else {
                        ""
                    };
                    o += &format!("<td{cls}>{}</td>", inline(c));
                }
                o += "</tr>\n";
                i += 1;
            }
            o += "</table>\n";
        } else if t.starts_with("- ") {
            flush(&mut para, &mut o);
            o += "<ul>\n";
            while i < lines.len() && lines[i].trim_start().starts_with("- ") {
                let mut item = lines[i].trim_start()[2..].to_string();
                i += 1;
                // continuation lines (indented, not a new item)
                while i < lines.len()
                    && lines[i].starts_with("  ")
                    && !lines[i].trim_start().starts_with("- ")
                    && !lines[i].trim().is_empty()
                {
                    item.push(' ');
                    item += lines[i].trim();
                    i += 1;
                }
                o += &format!("<li>{}</li>\n", inline(&item));
            }
            o += "</ul>\n";
        } else {
            para.push(t);
            i += 1;
        }
    }
    flush(&mut para, &mut o);
    o += "</body></html>\n";
    o
}
