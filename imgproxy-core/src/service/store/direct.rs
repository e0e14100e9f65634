//! Writing a new image into a local folder past the page cache (`O_DIRECT`, Linux), staged
//! and renamed into place as `object_store`'s own put does.
//!
//! An image is written once and read back rarely (the store keeps recent ones in memory), so
//! copying it into the page cache only to have it written back later costs a copy per byte
//! and memory the kernel must then reclaim; on the benchmark's machine that copy was the
//! largest single cost of a miss (issue 18). A filesystem that refuses `O_DIRECT` (tmpfs on
//! older kernels, some FUSE mounts) gets an ordinary buffered write.

use std::{
    fs::{File, OpenOptions},
    io::{self, ErrorKind, Write as _},
    os::unix::fs::{FileExt as _, OpenOptionsExt as _},
    path::{Path, PathBuf},
};

/// Offsets, lengths and buffer addresses of direct I/O are multiples of this: the largest
/// logical block size of common devices.
const BLOCK: usize = 4096;
/// Bytes of an unaligned image copied into the aligned buffer and written per call.
const CHUNK: usize = 256 * 1024;

/// Writes `bytes` to `dest` through a staging file beside it (`<dest>#<n>`, a name
/// `object_store` never lists) and a rename, creating missing folders.
pub(super) fn write(dest: &Path, bytes: &[u8]) -> io::Result<()> {
    let written = match stage(dest, true) {
        Ok((file, staging)) => match write_direct(&file, bytes) {
            Ok(()) => Ok((file, staging)),
            // The device wants a coarser alignment than `BLOCK`: write it again, buffered.
            Err(error) if error.kind() == ErrorKind::InvalidInput => {
                drop(file);
                remove(&staging);
                write_buffered(dest, bytes)
            }
            Err(error) => {
                remove(&staging);
                Err(error)
            }
        },
        Err(error) if error.kind() == ErrorKind::InvalidInput => write_buffered(dest, bytes),
        Err(error) => Err(error),
    };
    let (file, staging) = written?;
    drop(file);
    std::fs::rename(&staging, dest).inspect_err(|_| remove(&staging))
}

fn write_buffered(dest: &Path, bytes: &[u8]) -> io::Result<(File, PathBuf)> {
    let (mut file, staging) = stage(dest, false)?;
    match file.write_all(bytes) {
        Ok(()) => Ok((file, staging)),
        Err(error) => {
            remove(&staging);
            Err(error)
        }
    }
}

fn remove(staging: &Path) {
    // Best effort: a leftover staging file is never listed or served.
    let _ = std::fs::remove_file(staging);
}

/// A new staging file for `dest`, opened for direct I/O when `direct`.
fn stage(dest: &Path, direct: bool) -> io::Result<(File, PathBuf)> {
    let mut options = OpenOptions::new();
    options.write(true).create_new(true);
    if direct {
        options.custom_flags(libc::O_DIRECT);
    }
    let (mut suffix, mut made_folder) = (1_u32, false);
    loop {
        let mut staging = dest.as_os_str().to_owned();
        staging.push(format!("#{suffix}"));
        let staging = PathBuf::from(staging);
        match options.open(&staging) {
            Ok(file) => return Ok((file, staging)),
            Err(error) if error.kind() == ErrorKind::AlreadyExists => suffix += 1,
            Err(error) if error.kind() == ErrorKind::NotFound && !made_folder => {
                let Some(folder) = dest.parent() else {
                    return Err(error);
                };
                std::fs::create_dir_all(folder)?;
                made_folder = true;
            }
            Err(error) => return Err(error),
        }
    }
}

/// Writes `bytes` with direct I/O: its whole blocks straight from memory when it starts on a
/// block boundary (as images decoded by `b64::decode` do), else in chunks copied into an
/// aligned buffer; the last block padded with zeros and the padding then cut off.
fn write_direct(file: &File, bytes: &[u8]) -> io::Result<()> {
    let whole = if bytes.as_ptr().align_offset(BLOCK) == 0 {
        bytes.len() / BLOCK * BLOCK
    } else {
        0
    };
    file.write_all_at(&bytes[..whole], 0)?;
    let rest = &bytes[whole..];
    let size = rest.len().min(CHUNK).next_multiple_of(BLOCK);
    let mut buffer = vec![0_u8; size + BLOCK];
    let start = buffer.as_ptr().align_offset(BLOCK);
    let aligned = buffer
        .get_mut(start..start + size)
        .ok_or_else(|| io::Error::other("cannot align a buffer"))?;
    let mut offset = whole as u64;
    for chunk in rest.chunks(CHUNK) {
        let padded = chunk.len().next_multiple_of(BLOCK);
        aligned[..chunk.len()].copy_from_slice(chunk);
        aligned[chunk.len()..padded].fill(0);
        file.write_all_at(&aligned[..padded], offset)?;
        offset += chunk.len() as u64;
    }
    if !bytes.len().is_multiple_of(BLOCK) {
        file.set_len(bytes.len() as u64)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_exactly_the_bytes_of_any_length() -> io::Result<()> {
        let folder = tempfile::tempdir()?;
        for len in [
            0,
            1,
            BLOCK - 1,
            BLOCK,
            BLOCK + 1,
            CHUNK,
            CHUNK + 7,
            3 * CHUNK + BLOCK,
        ] {
            let bytes: Vec<u8> = (0..len).map(|i| (i % 251) as u8).collect();
            let dest = folder.path().join(format!("images/ab/{len}.png"));
            write(&dest, &bytes)?;
            assert_eq!(std::fs::read(&dest)?, bytes, "length {len}");
        }
        // No staging file is left behind.
        let left: Vec<_> = std::fs::read_dir(folder.path().join("images/ab"))?
            .filter_map(|entry| entry.ok())
            .filter(|entry| entry.file_name().to_string_lossy().contains('#'))
            .collect();
        assert!(left.is_empty(), "{left:?}");
        Ok(())
    }

    #[test]
    fn writes_aligned_bytes_as_they_are() -> io::Result<()> {
        let folder = tempfile::tempdir()?;
        let text = crate::b64::encode(&(0..3 * BLOCK + 5).map(|i| i as u8).collect::<Vec<_>>());
        let decoded = crate::b64::decode(&text).map_err(io::Error::other)?;
        assert_eq!(decoded.as_ptr().align_offset(BLOCK), 0);
        let dest = folder.path().join("aligned.png");
        write(&dest, &decoded)?;
        assert_eq!(std::fs::read(&dest)?, decoded);
        Ok(())
    }

    #[test]
    fn writing_again_replaces_the_file() -> io::Result<()> {
        let folder = tempfile::tempdir()?;
        let dest = folder.path().join("a.png");
        write(&dest, &[1; 5000])?;
        write(&dest, b"short")?;
        assert_eq!(std::fs::read(&dest)?, b"short");
        Ok(())
    }
}
