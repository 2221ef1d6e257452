//! A small HTML report builder for `runs/partN/report.html`: headings, paragraphs, figures,
//! tables and preformatted text (the architecture summary) in one self-contained page (inline
//! CSS, no scripts, no external resources; figures are referenced by relative path), laid out to
//! read like the write-up. All text is escaped, so names and numbers from data files cannot
//! inject markup.

use crate::{Result, write_atomic};
use std::fmt::Write as _;
use std::path::Path;

/// The page's style sheet: a readable single column, figures scaled to fit.
const CSS: &str = "\
body{font-family:-apple-system,'Segoe UI',Helvetica,Arial,sans-serif;line-height:1.5;\
color:#222;background:#fff;margin:0}\
main{max-width:960px;margin:0 auto;padding:1.5em}\
h1{font-size:1.9em;border-bottom:2px solid #ddd;padding-bottom:.3em}\
h2{font-size:1.4em;margin-top:1.8em;border-bottom:1px solid #eee;padding-bottom:.2em}\
figure{margin:1.2em 0;text-align:center}\
figure img{max-width:100%;height:auto;border:1px solid #ddd}\
figcaption{font-size:.92em;color:#555;margin-top:.4em}\
table{border-collapse:collapse;margin:1em 0;font-variant-numeric:tabular-nums}\
th,td{border:1px solid #ccc;padding:.3em .7em;text-align:left}\
th{background:#f3f3f3}\
tr:nth-child(even) td{background:#fafafa}\
pre{background:#f6f8fa;border:1px solid #ddd;padding:.8em;overflow-x:auto;font-size:.85em}";

/// One element of the page, in order.
#[derive(Clone, Debug, PartialEq)]
enum Block {
    Heading(String),
    Paragraph(String),
    Image {
        path: String,
        caption: String,
    },
    Table {
        headers: Vec<String>,
        rows: Vec<Vec<String>>,
    },
    Preformatted(String),
}

/// An HTML report under construction: a title and a sequence of blocks.
#[derive(Clone, Debug, PartialEq)]
pub struct Report {
    title: String,
    blocks: Vec<Block>,
}

impl Report {
    /// An empty report whose page title and top heading is `title`.
    pub fn new(title: impl Into<String>) -> Self {
        Self {
            title: title.into(),
            blocks: Vec::new(),
        }
    }

    /// Adds a section heading.
    pub fn heading(&mut self, text: impl Into<String>) -> &mut Self {
        self.blocks.push(Block::Heading(text.into()));
        self
    }

    /// Adds a paragraph of plain text.
    pub fn paragraph(&mut self, text: impl Into<String>) -> &mut Self {
        self.blocks.push(Block::Paragraph(text.into()));
        self
    }

    /// Adds a figure: the image at `rel_path` (relative to the report's directory) with a
    /// caption under it.
    pub fn image(&mut self, rel_path: impl Into<String>, caption: impl Into<String>) -> &mut Self {
        self.blocks.push(Block::Image {
            path: rel_path.into(),
            caption: caption.into(),
        });
        self
    }

    /// Adds a table with a header row; rows may be shorter or longer than the header.
    pub fn table<H: AsRef<str>, C: AsRef<str>>(
        &mut self,
        headers: &[H],
        rows: &[Vec<C>],
    ) -> &mut Self {
        self.blocks.push(Block::Table {
            headers: headers.iter().map(|h| h.as_ref().to_owned()).collect(),
            rows: rows
                .iter()
                .map(|r| r.iter().map(|c| c.as_ref().to_owned()).collect())
                .collect(),
        });
        self
    }

    /// Adds preformatted text (e.g. the architecture summary), shown in a fixed-width font.
    pub fn preformatted(&mut self, text: impl Into<String>) -> &mut Self {
        self.blocks.push(Block::Preformatted(text.into()));
        self
    }

    /// The paths of every image the report references, in order.
    pub fn images(&self) -> Vec<&str> {
        self.blocks
            .iter()
            .filter_map(|b| match b {
                Block::Image { path, .. } => Some(path.as_str()),
                _ => None,
            })
            .collect()
    }

    /// The referenced images that are not files under `dir` (the report's directory).
    pub fn missing_images(&self, dir: &Path) -> Vec<&str> {
        self.images()
            .into_iter()
            .filter(|p| !dir.join(p).is_file())
            .collect()
    }

    /// The complete HTML page.
    pub fn to_html(&self) -> String {
        let mut h = String::new();
        // Writing to a String cannot fail; the results are ignored for that reason.
        let _ = write!(
            h,
            "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n\
             <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n\
             <title>{title}</title>\n<style>{CSS}</style>\n</head>\n<body>\n<main>\n\
             <h1>{title}</h1>\n",
            title = escape_html(&self.title)
        );
        for block in &self.blocks {
            match block {
                Block::Heading(t) => {
                    let _ = writeln!(h, "<h2>{}</h2>", escape_html(t));
                }
                Block::Paragraph(t) => {
                    let _ = writeln!(h, "<p>{}</p>", escape_html(t));
                }
                Block::Image { path, caption } => {
                    let _ = writeln!(
                        h,
                        "<figure><img src=\"{}\" alt=\"{c}\"><figcaption>{c}</figcaption></figure>",
                        escape_html(path),
                        c = escape_html(caption)
                    );
                }
                Block::Table { headers, rows } => {
                    h.push_str("<table>\n<thead><tr>");
                    for c in headers {
                        let _ = write!(h, "<th>{}</th>", escape_html(c));
                    }
                    h.push_str("</tr></thead>\n<tbody>\n");
                    for row in rows {
                        h.push_str("<tr>");
                        for c in row {
                            let _ = write!(h, "<td>{}</td>", escape_html(c));
                        }
                        h.push_str("</tr>\n");
                    }
                    h.push_str("</tbody>\n</table>\n");
                }
                Block::Preformatted(t) => {
                    let _ = writeln!(h, "<pre>{}</pre>", escape_html(t));
                }
            }
        }
        h.push_str("</main>\n</body>\n</html>\n");
        h
    }

    /// Writes the page to `path` atomically (temporary file + rename), creating missing parent
    /// directories.
    pub fn write(&self, path: impl AsRef<Path>) -> Result<()> {
        write_atomic(path.as_ref(), self.to_html().as_bytes())
    }
}

/// `text` with `&`, `<`, `>`, `"` and `'` replaced by character references, safe in HTML text
/// and in quoted attribute values.
pub fn escape_html(text: &str) -> String {
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

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn escapes_every_special_character() {
        assert_eq!(
            escape_html(r#"<a href="x">Tom & Jerry's</a>"#),
            "&lt;a href=&quot;x&quot;&gt;Tom &amp; Jerry&#39;s&lt;/a&gt;"
        );
        assert_eq!(escape_html("plain ü"), "plain ü");
    }

    #[test]
    fn text_from_every_block_is_escaped() {
        let evil = "<script>alert('x')</script>";
        let mut r = Report::new(evil);
        r.heading(evil)
            .paragraph(evil)
            .image("a\".png", evil)
            .table(&[evil], &[vec![evil]])
            .preformatted(evil);
        let html = r.to_html();
        assert!(!html.contains("<script"));
        assert!(!html.contains("a\".png"));
        // Title, h1, heading, paragraph, alt, caption, th, td, pre.
        assert_eq!(html.matches("&lt;script&gt;alert(&#39;x&#39;)").count(), 9);
    }

    #[test]
    fn lists_images_and_finds_missing_ones() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("loss.png"), b"png").unwrap();
        let mut r = Report::new("Part 1");
        r.image("loss.png", "loss")
            .paragraph("text")
            .image("figs/ced.png", "ced");
        assert_eq!(r.images(), vec!["loss.png", "figs/ced.png"]);
        assert_eq!(r.missing_images(dir.path()), vec!["figs/ced.png"]);
    }

    #[test]
    fn writes_a_self_contained_page() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("part2/report.html");
        let mut r = Report::new("Part 2: full face");
        r.heading("Results")
            .table(&["split", "NME"], &[vec!["val", "0.051"], vec!["test"]])
            .preformatted("conv1 3x3\n  relu")
            .image("loss.png", "Training and validation loss");
        r.write(&path).unwrap();
        let html = std::fs::read_to_string(&path).unwrap();
        assert_eq!(html, r.to_html());
        assert!(html.starts_with("<!DOCTYPE html>"));
        assert!(html.contains("<h1>Part 2: full face</h1>"));
        assert!(html.contains("<tr><td>val</td><td>0.051</td></tr>"));
        assert!(html.contains("<tr><td>test</td></tr>"));
        assert!(html.contains("<pre>conv1 3x3\n  relu</pre>"));
        assert!(html.contains("<img src=\"loss.png\""));
        // Nothing is fetched from elsewhere and nothing runs.
        assert!(!html.contains("http"));
        assert!(!html.contains("<script"));
        assert!(!html.contains("<link"));
    }
}
