//! Netpbm headers (PBM, PGM, PPM: `P1` to `P6`) read as the format defines them.
//!
//! In a netpbm header a comment runs from `#` to the end of its line and separates tokens
//! like whitespace, wherever it stands: `28#wide\n28` is two numbers. The `image` decoder
//! drops the comment and its line end, so it reads that header as 2828, and a file another
//! program wrote and reads back correctly would come out as a different image or not at
//! all. So the header is parsed here and handed to the decoder rewritten plainly, with the
//! raster after it untouched.

use std::io::{BufRead, BufReader, Cursor, Read};
use std::path::Path;

use anyhow::{Context, Result, bail};

/// The most bytes a header may take, comments included, before its raster starts.
const MAX_HEADER: u64 = 64 * 1024;

/// Whether a file starting with `head` is a PBM, PGM or PPM image.
pub fn is_netpbm(head: &[u8]) -> bool {
    matches!(head, [b'P', b'1'..=b'6', ..])
}

/// Opens a netpbm image with its header rewritten without comments (`P5\n28 28\n255\n`),
/// followed by the file's raster as it is.
pub fn open_plain(path: &Path) -> Result<impl BufRead> {
    let file =
        std::fs::File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
    let mut reader = BufReader::new(file);
    let mut limited = (&mut reader).take(MAX_HEADER);
    let header = plain_header(&mut limited).map_err(|why| {
        // Cut off at the cap, the header looks truncated: say which it was.
        let why = if limited.limit() == 0 {
            format!("its header (comments included) runs past {MAX_HEADER} bytes, the most read")
        } else {
            why.to_string()
        };
        anyhow::anyhow!(
            "{} is not a readable PNG or PGM image: {why}",
            path.display()
        )
    })?;
    Ok(Cursor::new(header).chain(reader))
}

/// Reads a header up to and including the whitespace that ends it, and writes it plainly.
fn plain_header(reader: &mut impl Read) -> Result<Vec<u8>> {
    let mut bytes = reader.bytes();
    let mut next = || -> Result<Option<u8>> { bytes.next().transpose().map_err(Into::into) };
    let magic = [next()?, next()?];
    let kind = match magic {
        [Some(b'P'), Some(kind @ b'1'..=b'6')] => kind,
        _ => bail!("it does not start with P1 to P6"),
    };
    // Bitmaps (P1, P4) have no maximum sample value.
    let count = if matches!(kind, b'1' | b'4') { 2 } else { 3 };
    let mut numbers = Vec::with_capacity(count);
    let mut byte = next()?;
    while numbers.len() < count {
        // Whitespace and comments before the number.
        loop {
            match byte {
                Some(b) if is_space(b) => byte = next()?,
                Some(b'#') => {
                    skip_comment(&mut next)?;
                    byte = next()?;
                }
                _ => break,
            }
        }
        let mut value: u32 = 0;
        let mut digits = 0;
        while let Some(d @ b'0'..=b'9') = byte {
            value = value
                .checked_mul(10)
                .and_then(|v| v.checked_add(u32::from(d - b'0')))
                .context("a number in its header is above 4294967295")?;
            digits += 1;
            byte = next()?;
        }
        match byte {
            _ if digits == 0 => match byte {
                None => bail!("it ends inside its header"),
                Some(b) => bail!(
                    "its header holds {:?} where a number should be",
                    char::from(b)
                ),
            },
            Some(b) if is_space(b) => {}
            // The comment's line end is the whitespace that ends the number.
            Some(b'#') => skip_comment(&mut next)?,
            None => bail!("it ends inside its header"),
            Some(b) => bail!(
                "a number in its header is followed by {:?}, not whitespace",
                char::from(b)
            ),
        }
        numbers.push(value);
        // The whitespace after the last number is the header's last byte.
        if numbers.len() < count {
            byte = next()?;
        }
    }
    let mut header = format!("P{}\n{} {}\n", char::from(kind), numbers[0], numbers[1]);
    if let Some(maxval) = numbers.get(2) {
        header.push_str(&format!("{maxval}\n"));
    }
    Ok(header.into_bytes())
}

/// Whitespace as netpbm's C reader sees it (`isspace`): vertical tab included.
fn is_space(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\n' | b'\x0b' | b'\x0c' | b'\r')
}

/// Skips a comment's text and the line end that closes it.
fn skip_comment(next: &mut impl FnMut() -> Result<Option<u8>>) -> Result<()> {
    loop {
        match next()? {
            Some(b'\n' | b'\r') => return Ok(()),
            Some(_) => {}
            None => bail!("it ends inside a comment in its header"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plain(header: &str) -> String {
        match plain_header(&mut header.as_bytes()) {
            Ok(bytes) => String::from_utf8(bytes).unwrap(),
            Err(e) => format!("error: {e}"),
        }
    }

    #[test]
    fn comments_separate_numbers_wherever_they_stand() {
        assert_eq!(plain("P5\n28 28\n255\n"), "P5\n28 28\n255\n");
        assert_eq!(plain("P5 28#w\n28#h\r255#max\n"), "P5\n28 28\n255\n");
        assert_eq!(plain("P5#a\n#b\n 2#c\n8 255 "), "P5\n2 8\n255\n");
        assert_eq!(plain("P2\t3\x0b4\x0c65535\r"), "P2\n3 4\n65535\n");
        assert_eq!(plain("P4 16 2\n"), "P4\n16 2\n");
    }

    #[test]
    fn only_the_header_is_read() {
        let mut file: &[u8] = b"P5 2 1 255\n\x0a\x20";
        assert_eq!(plain_header(&mut file).unwrap(), b"P5\n2 1\n255\n");
        // The raster's first byte is whitespace, and it is left for the raster.
        assert_eq!(file, b"\x0a\x20");
    }

    #[test]
    fn broken_headers_say_what_is_wrong() {
        assert_eq!(plain("P7 1 1"), "error: it does not start with P1 to P6");
        assert_eq!(plain("P5 28 28"), "error: it ends inside its header");
        assert_eq!(
            plain("P5 28 #x"),
            "error: it ends inside a comment in its header"
        );
        assert_eq!(
            plain("P5 28 -1 255\n"),
            "error: its header holds '-' where a number should be"
        );
        assert_eq!(
            plain("P5 28x 28 255\n"),
            "error: a number in its header is followed by 'x', not whitespace"
        );
        assert_eq!(
            plain("P5 4294967296 1 255\n"),
            "error: a number in its header is above 4294967295"
        );
    }
}
