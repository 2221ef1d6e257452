//! Sample grids: many small figures (e.g. augmented samples from the data loader, each with its
//! landmarks drawn) tiled into one image, optionally with a caption under each.

use crate::Result;
use crate::plot::draw_on;
use image::{Rgb, RgbImage};
use plotters::style::{IntoFont, TextStyle};

/// Colour of the padding between cells.
const BACKGROUND: Rgb<u8> = Rgb([255, 255, 255]);

/// Height in pixels of the caption strip under each cell of [`captioned_grid`].
const CAPTION_HEIGHT: u32 = 18;

/// Font size of captions, in pixels.
const CAPTION_FONT: f64 = 13.0;

/// The images tiled row by row, `cols` per row (0 counts as 1), with `pad` white pixels around
/// and between cells. Every cell is as large as the largest image; smaller images sit in their
/// cell's top-left corner. No images give a `pad × pad` white image.
pub fn grid(images: &[RgbImage], cols: usize, pad: u32) -> RgbImage {
    layout_grid(images, cols, pad, 0).0
}

/// Like [`grid`], with `captions[i]` written in black under image `i` (missing captions leave
/// the strip empty; a caption wider than its cell is shortened with "…").
pub fn captioned_grid(
    images: &[RgbImage],
    captions: &[&str],
    cols: usize,
    pad: u32,
) -> Result<RgbImage> {
    let (mut out, cells) = layout_grid(images, cols, pad, CAPTION_HEIGHT);
    let cell_w = images.iter().map(RgbImage::width).max().unwrap_or(0);
    draw_on(&mut out, std::path::Path::new(""), |area| {
        let style = TextStyle::from(("sans-serif", CAPTION_FONT).into_font());
        for ((x, y), caption) in cells.iter().zip(captions) {
            let text = fit_text(caption, cell_w, |t| {
                area.estimate_text_size(t, &style).map(|(w, _)| w)
            })?;
            area.draw_text(&text, &style, (*x as i32, *y as i32 + 2))?;
        }
        Ok(())
    })?;
    Ok(out)
}

/// The grid image and, for each image, the top-left corner of its caption strip.
fn layout_grid(
    images: &[RgbImage],
    cols: usize,
    pad: u32,
    caption: u32,
) -> (RgbImage, Vec<(u32, u32)>) {
    let cols = if images.is_empty() {
        0
    } else {
        cols.clamp(1, images.len())
    };
    let rows = images.len().div_ceil(cols.max(1));
    let cell_w = images.iter().map(RgbImage::width).max().unwrap_or(0);
    let cell_h = images.iter().map(RgbImage::height).max().unwrap_or(0) + caption;
    let (cols, rows) = (cols as u32, rows as u32);
    let width = cols * cell_w + (cols + 1) * pad;
    let height = if rows == 0 {
        pad
    } else {
        rows * cell_h + (rows + 1) * pad
    };
    let mut out = RgbImage::from_pixel(width, height, BACKGROUND);
    let mut captions = Vec::with_capacity(images.len());
    for (i, img) in images.iter().enumerate() {
        let (c, r) = (i as u32 % cols, i as u32 / cols);
        let x0 = pad + c * (cell_w + pad);
        let y0 = pad + r * (cell_h + pad);
        image::imageops::replace(&mut out, img, i64::from(x0), i64::from(y0));
        captions.push((x0, y0 + cell_h - caption));
    }
    (out, captions)
}

/// `text`, or its longest prefix followed by "…" whose measured width fits `max_width`.
fn fit_text<E>(
    text: &str,
    max_width: u32,
    mut width: impl FnMut(&str) -> std::result::Result<u32, E>,
) -> std::result::Result<String, E> {
    if width(text)? <= max_width {
        return Ok(text.to_owned());
    }
    let chars: Vec<char> = text.chars().collect();
    for n in (0..chars.len()).rev() {
        let candidate: String = chars[..n].iter().chain(std::iter::once(&'…')).collect();
        if width(&candidate)? <= max_width {
            return Ok(candidate);
        }
    }
    Ok(String::new())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn solid(w: u32, h: u32, v: u8) -> RgbImage {
        RgbImage::from_pixel(w, h, Rgb([v, 0, 0]))
    }

    #[test]
    fn tiles_row_by_row_with_padding() {
        let imgs = [solid(4, 3, 10), solid(4, 3, 20), solid(2, 2, 30)];
        let out = grid(&imgs, 2, 1);
        // 2 columns of 4 + 3 pads; 2 rows of 3 + 3 pads.
        assert_eq!(out.dimensions(), (11, 9));
        assert_eq!(*out.get_pixel(0, 0), BACKGROUND);
        assert_eq!(*out.get_pixel(1, 1), Rgb([10, 0, 0]));
        assert_eq!(*out.get_pixel(4, 3), Rgb([10, 0, 0]));
        assert_eq!(*out.get_pixel(5, 1), BACKGROUND);
        assert_eq!(*out.get_pixel(6, 1), Rgb([20, 0, 0]));
        assert_eq!(*out.get_pixel(1, 5), Rgb([30, 0, 0]));
        // The small image leaves the rest of its cell white.
        assert_eq!(*out.get_pixel(3, 5), BACKGROUND);
    }

    #[test]
    fn degenerate_arguments_do_not_panic() {
        assert_eq!(grid(&[], 3, 2).dimensions(), (2, 2));
        // cols = 0 is one column; more columns than images shrink to the image count.
        assert_eq!(
            grid(&[solid(2, 2, 1), solid(2, 2, 1)], 0, 0).dimensions(),
            (2, 4)
        );
        assert_eq!(grid(&[solid(2, 2, 1)], 5, 0).dimensions(), (2, 2));
    }

    #[test]
    fn captions_add_a_strip_with_text() {
        let imgs = [solid(60, 20, 200), solid(60, 20, 100)];
        let out =
            captioned_grid(&imgs, &["epoch 1", "a caption far too long to fit"], 2, 2).unwrap();
        assert_eq!(
            out.dimensions(),
            (2 * 60 + 3 * 2, 20 + CAPTION_HEIGHT + 2 * 2)
        );
        // Images are in place and the strips got dark text pixels, inside their own cell only.
        assert_eq!(*out.get_pixel(2, 2), Rgb([200, 0, 0]));
        let dark_in = |x0: u32, x1: u32| {
            (x0..x1)
                .flat_map(|x| (22..22 + CAPTION_HEIGHT).map(move |y| (x, y)))
                .filter(|&(x, y)| out.get_pixel(x, y).0[0] < 128)
                .count()
        };
        assert!(dark_in(2, 62) > 10);
        assert!(dark_in(64, 124) > 10);
        assert_eq!(dark_in(62, 64), 0);
        assert_eq!(dark_in(124, 126), 0);
    }

    #[test]
    fn fit_text_shortens_with_an_ellipsis() {
        let w = |t: &str| Ok::<u32, ()>(t.chars().count() as u32);
        assert_eq!(fit_text("short", 5, w).unwrap(), "short");
        assert_eq!(fit_text("longer", 4, w).unwrap(), "lon…");
        assert_eq!(fit_text("x", 0, w).unwrap(), "");
    }
}
