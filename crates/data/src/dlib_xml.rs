//! dlib's image-dataset XML (`imglab` / `save_image_dataset_metadata`), the format of iBUG
//! 300-W's `labels_ibug_300W_{train,test}.xml` and of dlib's example faces:
//!
//! ```text
//! <dataset><name>..</name><comment>..</comment><images>
//!   <image file='x.jpg' [width='W' height='H']>
//!     <box top='T' left='L' width='W' height='H' [ignore='1']>
//!       <part name='00' x='X' y='Y'/> ...
//!     </box> ...
//!   </image> ...
//! </images></dataset>
//! ```
//!
//! The files run to thousands of images, so [`DlibXmlReader`] streams them one `<image>` at a
//! time instead of building a document tree. Parts are named `00 .. N-1` and may come in any
//! order; a box has either all `N` parts or none (test files give boxes only). Points are not
//! checked against the image here: the image size is not known yet.
//!
//! The text must be UTF-8 whatever the declaration says (dlib writes `ISO-8859-1` but the
//! files are ASCII in practice): a byte that is not UTF-8 is reported as malformed XML.

use crate::{DataError, Result};
use fkd_core::{FaceBox, ImageSize, PixelPoint};
use quick_xml::XmlVersion;
use quick_xml::events::{BytesRef, BytesStart, Event};
use std::borrow::Cow;
use std::fs::File;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};

/// One `<box>`: a face rectangle and, when annotated, its landmarks.
#[derive(Clone, Debug, PartialEq)]
pub struct XmlBox {
    /// The face rectangle in image pixels.
    pub bbox: FaceBox,
    /// Whether the box is marked `ignore='1'` (a face the annotators chose not to label).
    pub ignore: bool,
    /// The landmarks ordered by part index, or `None` for a box without parts.
    pub points: Option<Vec<PixelPoint>>,
    /// 1-based line of the `<box>` tag.
    pub line: usize,
}

/// One `<image>` with its boxes.
#[derive(Clone, Debug, PartialEq)]
pub struct XmlImage {
    /// The image file as written, relative to the XML file's folder.
    pub file: String,
    /// The image size, when the `<image>` tag gives `width` and `height`.
    pub size: Option<ImageSize>,
    /// The boxes, in file order.
    pub boxes: Vec<XmlBox>,
    /// 0-based position of this image in the file.
    pub index: usize,
    /// 1-based line of the `<image>` tag.
    pub line: usize,
}

/// Reads every image of a dlib XML file whose boxes have `n_points` parts (or none).
pub fn read_dlib_xml(path: &Path, n_points: usize) -> Result<Vec<XmlImage>> {
    DlibXmlReader::open(path, n_points)?.collect()
}

/// The elements of the format, for tracking where in the document the reader is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Element {
    Dataset,
    Name,
    Comment,
    Images,
    Image,
    Box,
    Part,
    /// dlib's optional text label of a box; read and dropped.
    Label,
}

impl Element {
    fn tag(self) -> &'static str {
        match self {
            Element::Dataset => "dataset",
            Element::Name => "name",
            Element::Comment => "comment",
            Element::Images => "images",
            Element::Image => "image",
            Element::Box => "box",
            Element::Part => "part",
            Element::Label => "label",
        }
    }
}

/// A `<box>` whose parts are still being read.
struct PendingBox {
    bbox: FaceBox,
    ignore: bool,
    /// Slot `i` holds part `i` once read.
    points: Vec<Option<PixelPoint>>,
    found: usize,
    line: usize,
}

/// What one XML event led to.
enum Step {
    Continue,
    Image(XmlImage),
    End,
}

/// A streaming reader of a dlib XML file: an iterator over its `<image>` elements.
///
/// After the first error the iterator ends: a broken file is not read past the break.
pub struct DlibXmlReader<R: BufRead> {
    xml: quick_xml::Reader<R>,
    path: PathBuf,
    n_points: usize,
    buf: Vec<u8>,
    /// 1-based line where the next event starts.
    line: usize,
    stack: Vec<Element>,
    name: Option<String>,
    comment: Option<String>,
    /// Text of the open `<name>` or `<comment>`.
    text: Option<String>,
    image: Option<XmlImage>,
    bbox: Option<PendingBox>,
    next_index: usize,
    seen_dataset: bool,
    finished: bool,
}

impl DlibXmlReader<BufReader<File>> {
    /// Opens a dlib XML file whose boxes have `n_points` parts (or none).
    pub fn open(path: &Path, n_points: usize) -> Result<Self> {
        let file = File::open(path).map_err(|e| DataError::io(path, e))?;
        Ok(Self::new(
            BufReader::with_capacity(1 << 16, file),
            path,
            n_points,
        ))
    }
}

impl<R: BufRead> DlibXmlReader<R> {
    /// A reader over `reader`; `path` names the file in errors.
    pub fn new(reader: R, path: &Path, n_points: usize) -> Self {
        Self {
            xml: quick_xml::Reader::from_reader(reader),
            path: path.to_path_buf(),
            n_points,
            buf: Vec::new(),
            line: 1,
            stack: Vec::new(),
            name: None,
            comment: None,
            text: None,
            image: None,
            bbox: None,
            next_index: 0,
            seen_dataset: false,
            finished: false,
        }
    }

    /// The data set's `<name>`, once the reader has passed it.
    pub fn name(&self) -> Option<&str> {
        self.name.as_deref()
    }

    /// The data set's `<comment>`, once the reader has passed it.
    pub fn comment(&self) -> Option<&str> {
        self.comment.as_deref()
    }

    fn malformed(&self, line: usize, reason: impl Into<String>) -> DataError {
        DataError::malformed(&self.path, line, reason)
    }

    /// Reads events up to the end of the next `<image>` (or of the file).
    fn advance(&mut self) -> Result<Option<XmlImage>> {
        loop {
            // The buffer is moved out so the event can borrow it while `self` is updated.
            let mut buf = std::mem::take(&mut self.buf);
            buf.clear();
            let line = self.line;
            let step = match self.xml.read_event_into(&mut buf) {
                Ok(event) => self.handle(event, line),
                Err(e) => Err(self.xml_error(e, line)),
            };
            // Every consumed byte except the markup delimiters (which hold no newline) lands
            // in the buffer, so its newlines keep the line count exact.
            self.line += count_newlines(&buf);
            self.buf = buf;
            match step? {
                Step::Continue => {}
                Step::Image(image) => return Ok(Some(image)),
                Step::End => return Ok(None),
            }
        }
    }

    fn xml_error(&self, e: quick_xml::Error, line: usize) -> DataError {
        match e {
            quick_xml::Error::Io(io) => {
                DataError::io(&self.path, std::io::Error::new(io.kind(), io.to_string()))
            }
            other => self.malformed(line, format!("invalid XML: {other}")),
        }
    }

    fn handle(&mut self, event: Event<'_>, line: usize) -> Result<Step> {
        match event {
            Event::Start(e) => {
                let element = self.open_element(&e, line)?;
                self.stack.push(element);
                Ok(Step::Continue)
            }
            Event::Empty(e) => {
                let element = self.open_element(&e, line)?;
                self.close_element(element, line)
            }
            Event::End(e) => match self.stack.pop() {
                Some(element) => self.close_element(element, line),
                None => Err(self.malformed(line, format!("unmatched </{}>", e.name().as_ref()))),
            },
            Event::Text(t) => self.text_content(&t.xml10_content(), line),
            Event::CData(t) => self.text_content(&t.xml10_content(), line),
            Event::GeneralRef(r) => {
                let resolved = self.resolve_ref(&r, line)?;
                self.text_content(&resolved, line)
            }
            Event::Comment(_) | Event::Decl(_) | Event::PI(_) | Event::DocType(_) => {
                Ok(Step::Continue)
            }
            Event::Eof => {
                if let Some(open) = self.stack.last() {
                    return Err(self.malformed(line, format!("file ends inside <{}>", open.tag())));
                }
                if !self.seen_dataset {
                    return Err(self.malformed(line, "no <dataset> element"));
                }
                Ok(Step::End)
            }
        }
    }

    /// An entity or character reference in text, as the text it stands for.
    fn resolve_ref(&self, r: &BytesRef<'_>, line: usize) -> Result<String> {
        let bad = |what: String| self.malformed(line, what);
        if let Some(c) = r
            .resolve_char_ref()
            .map_err(|e| bad(format!("invalid character reference: {e}")))?
        {
            return Ok(c.to_string());
        }
        let name: &str = r;
        quick_xml::escape::resolve_predefined_entity(name)
            .map(str::to_owned)
            .ok_or_else(|| bad(format!("unknown entity &{name};")))
    }

    fn text_content(&mut self, text: &str, line: usize) -> Result<Step> {
        if let Some(collected) = &mut self.text {
            collected.push_str(text);
        } else if !text.trim().is_empty() && self.stack.last() != Some(&Element::Label) {
            let shown: String = text.trim().chars().take(40).collect();
            return Err(self.malformed(line, format!("unexpected text {shown:?}")));
        }
        Ok(Step::Continue)
    }

    fn open_element(&mut self, e: &BytesStart<'_>, line: usize) -> Result<Element> {
        let name = e.name();
        let tag = name.as_ref();
        let parent = self.stack.last().copied();
        let element = match (parent, tag) {
            (None, "dataset") if !self.seen_dataset => {
                self.seen_dataset = true;
                Element::Dataset
            }
            (Some(Element::Dataset), "name") => {
                self.text = Some(String::new());
                Element::Name
            }
            (Some(Element::Dataset), "comment") => {
                self.text = Some(String::new());
                Element::Comment
            }
            (Some(Element::Dataset), "images") => Element::Images,
            (Some(Element::Images), "image") => {
                self.image = Some(self.start_image(e, line)?);
                Element::Image
            }
            (Some(Element::Image), "box") => {
                self.bbox = Some(self.start_box(e, line)?);
                Element::Box
            }
            (Some(Element::Box), "part") => {
                self.add_part(e, line)?;
                Element::Part
            }
            (Some(Element::Box), "label") => Element::Label,
            _ => {
                let place = match parent {
                    None => "at the top level".to_owned(),
                    Some(p) => format!("inside <{}>", p.tag()),
                };
                return Err(self.malformed(line, format!("unexpected <{tag}> {place}")));
            }
        };
        Ok(element)
    }

    fn close_element(&mut self, element: Element, line: usize) -> Result<Step> {
        match element {
            Element::Name => self.name = self.text.take().map(|t| t.trim().to_owned()),
            Element::Comment => self.comment = self.text.take().map(|t| t.trim().to_owned()),
            Element::Box => {
                let pending = self
                    .bbox
                    .take()
                    .ok_or_else(|| self.malformed(line, "</box> without an open <box>"))?;
                let finished = self.finish_box(pending)?;
                match &mut self.image {
                    Some(image) => image.boxes.push(finished),
                    None => return Err(self.malformed(line, "<box> outside an <image>")),
                }
            }
            Element::Image => {
                let image = self
                    .image
                    .take()
                    .ok_or_else(|| self.malformed(line, "</image> without an open <image>"))?;
                return Ok(Step::Image(image));
            }
            Element::Dataset | Element::Images | Element::Part | Element::Label => {}
        }
        Ok(Step::Continue)
    }

    fn start_image(&mut self, e: &BytesStart<'_>, line: usize) -> Result<XmlImage> {
        let attrs = Attrs::read(e, &self.path, line)?;
        let file = attrs.required("file")?.to_owned();
        if file.is_empty() {
            return Err(self.malformed(line, "<image> has an empty file name"));
        }
        let size = match (attrs.get("width"), attrs.get("height")) {
            (None, None) => None,
            (Some(w), Some(h)) => Some(ImageSize::new(
                attrs.positive_int("width", w)?,
                attrs.positive_int("height", h)?,
            )),
            _ => {
                return Err(self.malformed(line, "<image> gives only one of width and height"));
            }
        };
        let index = self.next_index;
        self.next_index += 1;
        Ok(XmlImage {
            file,
            size,
            boxes: Vec::new(),
            index,
            line,
        })
    }

    fn start_box(&self, e: &BytesStart<'_>, line: usize) -> Result<PendingBox> {
        let attrs = Attrs::read(e, &self.path, line)?;
        let top = attrs.finite("top")?;
        let left = attrs.finite("left")?;
        let width = attrs.finite("width")?;
        let height = attrs.finite("height")?;
        let ignore = match attrs.get("ignore") {
            None | Some("0") | Some("false") => false,
            Some("1") | Some("true") => true,
            Some(other) => {
                return Err(self.malformed(
                    line,
                    format!("<box> attribute ignore={other:?} is not 0 or 1"),
                ));
            }
        };
        Ok(PendingBox {
            bbox: FaceBox::new(left, top, width, height),
            ignore,
            points: vec![None; self.n_points],
            found: 0,
            line,
        })
    }

    fn add_part(&mut self, e: &BytesStart<'_>, line: usize) -> Result<()> {
        let attrs = Attrs::read(e, &self.path, line)?;
        let name = attrs.required("name")?;
        let index = name
            .bytes()
            .all(|b| b.is_ascii_digit())
            .then(|| name.parse::<usize>().ok())
            .flatten()
            .ok_or_else(|| {
                self.malformed(line, format!("part name {name:?} is not a point number"))
            })?;
        if index >= self.n_points {
            return Err(self.malformed(
                line,
                format!(
                    "part name {name:?} is out of range for {} points",
                    self.n_points
                ),
            ));
        }
        let point = PixelPoint::new(attrs.finite("x")?, attrs.finite("y")?);
        let n_points = self.n_points;
        let Some(pending) = self.bbox.as_mut() else {
            return Err(self.malformed(line, "<part> outside a <box>"));
        };
        match pending.points.get_mut(index) {
            Some(slot @ None) => {
                *slot = Some(point);
                pending.found += 1;
                Ok(())
            }
            Some(Some(_)) => Err(DataError::malformed(
                &self.path,
                line,
                format!("part {name:?} appears twice in the box"),
            )),
            None => Err(DataError::malformed(
                &self.path,
                line,
                format!("part name {name:?} is out of range for {n_points} points"),
            )),
        }
    }

    fn finish_box(&self, pending: PendingBox) -> Result<XmlBox> {
        let points = if pending.found == 0 {
            None
        } else if pending.found == self.n_points {
            Some(pending.points.into_iter().flatten().collect())
        } else {
            return Err(DataError::PointCount {
                path: self.path.clone(),
                line: pending.line,
                expected: self.n_points,
                found: pending.found,
            });
        };
        Ok(XmlBox {
            bbox: pending.bbox,
            ignore: pending.ignore,
            points,
            line: pending.line,
        })
    }
}

/// The number of `\n` bytes in `bytes`. `skip_until` on a slice is a memchr in the
/// precompiled standard library, which keeps this fast in unoptimised test builds too.
fn count_newlines(bytes: &[u8]) -> usize {
    let mut rest = bytes;
    let mut segments = 0;
    while let Ok(1..) = rest.skip_until(b'\n') {
        segments += 1;
    }
    // Every segment ends at a newline except a last one that runs to the end of the bytes.
    let unterminated = bytes.last().is_some_and(|&b| b != b'\n');
    segments - usize::from(unterminated)
}

impl<R: BufRead> Iterator for DlibXmlReader<R> {
    type Item = Result<XmlImage>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.finished {
            return None;
        }
        match self.advance() {
            Ok(Some(image)) => Some(Ok(image)),
            Ok(None) => {
                self.finished = true;
                None
            }
            Err(e) => {
                self.finished = true;
                Some(Err(e))
            }
        }
    }
}

/// The attributes of one tag, with typed look-ups whose errors name the file and line.
struct Attrs<'a> {
    tag: &'a str,
    values: Vec<(&'a str, Cow<'a, str>)>,
    path: &'a Path,
    line: usize,
}

impl<'a> Attrs<'a> {
    fn read(e: &'a BytesStart<'_>, path: &'a Path, line: usize) -> Result<Self> {
        let tag = e.name().0;
        let bad = |err: &dyn std::fmt::Display| {
            DataError::malformed(path, line, format!("bad attribute in <{tag}>: {err}"))
        };
        let mut values = Vec::with_capacity(4);
        for attr in e.attributes() {
            let attr = attr.map_err(|err| bad(&err))?;
            let value = attr
                .normalized_value(XmlVersion::Implicit1_0)
                .map_err(|err| bad(&err))?;
            values.push((attr.key.0, value));
        }
        Ok(Self {
            tag,
            values,
            path,
            line,
        })
    }

    fn get(&self, key: &str) -> Option<&str> {
        self.values
            .iter()
            .find(|(k, _)| *k == key)
            .map(|(_, v)| v.as_ref())
    }

    fn required(&self, key: &str) -> Result<&str> {
        self.get(key).ok_or_else(|| {
            DataError::malformed(
                self.path,
                self.line,
                format!("<{}> has no {key:?} attribute", self.tag),
            )
        })
    }

    /// A required attribute as a finite number.
    fn finite(&self, key: &str) -> Result<f32> {
        let text = self.required(key)?;
        let value: f32 = text.trim().parse().map_err(|_| {
            DataError::malformed(
                self.path,
                self.line,
                format!("<{}> attribute {key}={text:?} is not a number", self.tag),
            )
        })?;
        if !value.is_finite() {
            return Err(DataError::Coordinate {
                path: self.path.to_path_buf(),
                line: self.line,
                value,
                reason: format!("(<{}> attribute {key}) is not finite", self.tag),
            });
        }
        Ok(value)
    }

    fn positive_int(&self, key: &str, text: &str) -> Result<u32> {
        match text.trim().parse::<u32>() {
            Ok(v) if v > 0 => Ok(v),
            _ => Err(DataError::malformed(
                self.path,
                self.line,
                format!(
                    "<{}> attribute {key}={text:?} is not a positive integer",
                    self.tag
                ),
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn fixture(name: &str) -> PathBuf {
        PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("../../fixtures/xml")
            .join(name)
    }

    fn parse(text: &str, n_points: usize) -> Result<Vec<XmlImage>> {
        DlibXmlReader::new(text.as_bytes(), Path::new("inline.xml"), n_points).collect()
    }

    fn wrap(images: &str) -> String {
        format!("<?xml version='1.0'?>\n<dataset>\n<images>\n{images}</images>\n</dataset>\n")
    }

    #[test]
    fn two_boxes_with_shuffled_parts() {
        let mut reader = DlibXmlReader::open(&fixture("two_boxes.xml"), 68).unwrap();
        let first = reader.next().unwrap().unwrap();
        assert_eq!(reader.name(), Some("Two boxes"));
        assert_eq!(
            reader.comment(),
            Some("Hand-made fixture & test: 2 boxes, 68 parts each.")
        );
        assert!(reader.next().is_none());

        assert_eq!(first.file, "faces/a.jpg");
        assert_eq!(first.size, Some(ImageSize::new(400, 300)));
        assert_eq!((first.index, first.line), (0, 7));
        assert_eq!(first.boxes.len(), 2);
        let (a, b) = (&first.boxes[0], &first.boxes[1]);
        assert_eq!(a.bbox, FaceBox::new(20.0, 10.0, 100.0, 90.0));
        assert_eq!(a.line, 8);
        assert!(!a.ignore);
        assert!(b.ignore);
        assert_eq!(b.line, 78);
        // The fixture puts part i at (left + i, top + 2i) for the first box and
        // (left + 0.5 i, top + i) for the second, in shuffled order.
        let pa = a.points.as_ref().unwrap();
        let pb = b.points.as_ref().unwrap();
        for i in 0..68 {
            let f = i as f32;
            assert_eq!(pa[i], PixelPoint::new(20.0 + f, 10.0 + 2.0 * f), "part {i}");
            assert_eq!(
                pb[i],
                PixelPoint::new(200.0 + 0.5 * f, 100.0 + f),
                "part {i}"
            );
        }
    }

    #[test]
    fn boxes_only() {
        let images = read_dlib_xml(&fixture("boxes_only.xml"), 68).unwrap();
        assert_eq!(images.len(), 2);
        assert_eq!(images[0].boxes.len(), 2);
        assert!(images[0].boxes.iter().all(|b| b.points.is_none()));
        assert_eq!(images[1].size, None);
        assert_eq!(images[1].index, 1);
        assert_eq!(images[1].boxes.len(), 0);
        assert_eq!(images[1].line, 11);
    }

    #[test]
    fn missing_part_is_point_count_at_the_box() {
        let e = read_dlib_xml(&fixture("missing_part.xml"), 68).unwrap_err();
        assert!(
            matches!(
                e,
                DataError::PointCount {
                    line: 6,
                    expected: 68,
                    found: 67,
                    ..
                }
            ),
            "{e:?}"
        );
    }

    #[test]
    fn bad_attribute_is_malformed_at_its_line() {
        let e = read_dlib_xml(&fixture("bad_attr.xml"), 68).unwrap_err();
        match e {
            DataError::Malformed { line, reason, .. } => {
                assert_eq!(line, 9);
                assert!(reason.contains("top"), "{reason}");
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn not_xml_is_malformed() {
        let e = read_dlib_xml(&fixture("not_xml.xml"), 68).unwrap_err();
        assert!(matches!(e, DataError::Malformed { line: 1, .. }), "{e:?}");
    }

    #[test]
    fn missing_file_is_io() {
        let e = DlibXmlReader::open(&fixture("no_such_file.xml"), 68)
            .err()
            .unwrap();
        assert!(matches!(e, DataError::Io { .. }), "{e:?}");
    }

    #[test]
    fn part_errors() {
        let boxed = |parts: &str| {
            wrap(&format!(
                "<image file='a.jpg'>\n<box top='1' left='2' width='3' height='4'>\n{parts}</box>\n</image>\n"
            ))
        };
        // Lines: 1 decl, 2 dataset, 3 images, 4 image, 5 box, 6.. parts.
        let two = "<part name='00' x='1' y='2'/>\n<part name='01' x='3' y='4'/>\n";
        let ok = parse(&boxed(two), 2).unwrap();
        assert_eq!(
            ok[0].boxes[0].points.as_deref(),
            Some(&[PixelPoint::new(1.0, 2.0), PixelPoint::new(3.0, 4.0)][..])
        );

        let dup = "<part name='00' x='1' y='2'/>\n<part name='0' x='3' y='4'/>\n";
        let e = parse(&boxed(dup), 2).unwrap_err();
        assert!(matches!(e, DataError::Malformed { line: 7, .. }), "{e:?}");

        let out = "<part name='00' x='1' y='2'/>\n<part name='02' x='3' y='4'/>\n";
        let e = parse(&boxed(out), 2).unwrap_err();
        assert!(matches!(e, DataError::Malformed { line: 7, .. }), "{e:?}");

        let named = "<part name='left' x='1' y='2'/>\n";
        let e = parse(&boxed(named), 2).unwrap_err();
        assert!(matches!(e, DataError::Malformed { line: 6, .. }), "{e:?}");

        let nan = "<part name='00' x='1' y='2'/>\n<part name='01' x='NaN' y='4'/>\n";
        let e = parse(&boxed(nan), 2).unwrap_err();
        assert!(
            matches!(e, DataError::Coordinate { line: 7, value, .. } if value.is_nan()),
            "{e:?}"
        );

        let no_y = "<part name='00' x='1'/>\n";
        let e = parse(&boxed(no_y), 2).unwrap_err();
        assert!(matches!(e, DataError::Malformed { line: 6, .. }), "{e:?}");
    }

    #[test]
    fn structure_errors() {
        // Unclosed image: the file ends inside it.
        let e = parse("<dataset><images>\n<image file='a.jpg'>\n", 2).unwrap_err();
        assert!(matches!(e, DataError::Malformed { line: 3, .. }), "{e:?}");
        // Mismatched end tag.
        let e = parse("<dataset><images>\n<image file='a.jpg'>\n</box>\n", 2).unwrap_err();
        assert!(matches!(e, DataError::Malformed { line: 3, .. }), "{e:?}");
        // A box outside an image.
        let e = parse(&wrap("<box top='1' left='2' width='3' height='4'/>\n"), 2).unwrap_err();
        assert!(matches!(e, DataError::Malformed { line: 4, .. }), "{e:?}");
        // No dataset at all.
        let e = parse("<?xml version='1.0'?>\n", 2).unwrap_err();
        assert!(matches!(e, DataError::Malformed { line: 2, .. }), "{e:?}");
        // Two datasets.
        let e = parse("<dataset/>\n<dataset/>\n", 2).unwrap_err();
        assert!(matches!(e, DataError::Malformed { line: 2, .. }), "{e:?}");
        // Image attributes.
        let e = parse(&wrap("<image/>\n"), 2).unwrap_err();
        assert!(matches!(e, DataError::Malformed { line: 4, .. }), "{e:?}");
        let e = parse(&wrap("<image file='a.jpg' width='10'/>\n"), 2).unwrap_err();
        assert!(matches!(e, DataError::Malformed { line: 4, .. }), "{e:?}");
        let e = parse(&wrap("<image file='a.jpg' width='0' height='3'/>\n"), 2).unwrap_err();
        assert!(matches!(e, DataError::Malformed { line: 4, .. }), "{e:?}");
        let e = parse(&wrap("<image file='a.jpg' file='b.jpg'/>\n"), 2).unwrap_err();
        assert!(matches!(e, DataError::Malformed { line: 4, .. }), "{e:?}");
        // Ignore flag.
        let e = parse(
            &wrap("<image file='a.jpg'><box top='1' left='2' width='3' height='4' ignore='maybe'/></image>\n"),
            2,
        )
        .unwrap_err();
        assert!(matches!(e, DataError::Malformed { line: 4, .. }), "{e:?}");
    }

    #[test]
    fn stops_after_the_first_error() {
        let text = wrap("<image file='a.jpg'/>\n<image/>\n<image file='c.jpg'/>\n");
        let mut reader = DlibXmlReader::new(text.as_bytes(), Path::new("x.xml"), 2);
        assert_eq!(reader.next().unwrap().unwrap().file, "a.jpg");
        assert!(matches!(
            reader.next(),
            Some(Err(DataError::Malformed { line: 5, .. }))
        ));
        assert!(reader.next().is_none());
    }

    #[test]
    fn non_utf8_byte_is_malformed_at_its_line() {
        let text = b"<dataset>\n<images>\n<image file='caf\xe9.jpg'/>\n</images>\n</dataset>\n";
        let e = DlibXmlReader::new(&text[..], Path::new("x.xml"), 2)
            .collect::<Result<Vec<_>>>()
            .unwrap_err();
        assert!(matches!(e, DataError::Malformed { line: 3, .. }), "{e:?}");
    }

    #[test]
    fn counts_newlines() {
        for text in ["", "a", "\n", "a\nb", "a\nb\n", "\n\n\nx", "x\n\n"] {
            let expected = text.bytes().filter(|&b| b == b'\n').count();
            assert_eq!(count_newlines(text.as_bytes()), expected, "{text:?}");
        }
    }

    #[test]
    fn line_numbers_survive_multi_line_comments_and_tags() {
        let text = "<?xml version='1.0'?>\n<!-- a\ncomment -->\n<dataset>\n<comment>two\nlines</comment>\n<images>\n<image\n file='a.jpg'>\n<box top='1' left='2'\n width='3' height='4'/>\n</image>\n<image file='b.jpg'/>\n</images></dataset>";
        let mut reader = DlibXmlReader::new(text.as_bytes(), Path::new("x.xml"), 2);
        let a = reader.next().unwrap().unwrap();
        assert_eq!(reader.comment(), Some("two\nlines"));
        assert_eq!(a.line, 8);
        assert_eq!(a.boxes[0].line, 10);
        let b = reader.next().unwrap().unwrap();
        assert_eq!(b.line, 13);
        assert!(reader.next().is_none());
    }
}
