//! Files whose writes survive a power cut when a call returns, for what a
//! validator must never forget: the consensus write-ahead log and the last
//! thing it signed. sled's `flush` only asks the kernel to start writing
//! (`sync_file_range`), so neither lives in sled: blocks and state can be
//! fetched again from peers, a forgotten signature cannot be taken back.
//!
//! - `write_atomically`: a temporary file, fdatasync'd, renamed over the
//!   target, and the directory fsync'd (small files replaced whole).
//! - `AppendLog`: an append-only file of checksummed records; `append` with
//!   `sync` returns after fdatasync (which also makes every earlier append
//!   durable); a torn or corrupt tail left by a crash is cut off on open.
//! - `SlotFile`: a fixed-size record rewritten in place in one of two slots
//!   (alternating, each with a sequence number and checksum) and fdatasync'd:
//!   one sync per write, and a torn write leaves the other slot intact.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use agora_protocol::Hash;

/// A failed durable write or read: the path and what went wrong.
#[derive(Debug, thiserror::Error)]
#[error("{path}: {reason}")]
pub struct DurableError {
    pub path: String,
    pub reason: String,
}

fn err(path: &Path, reason: impl std::fmt::Display) -> DurableError {
    DurableError { path: path.display().to_string(), reason: reason.to_string() }
}

/// fsyncs the directory holding `path`, so a created or renamed entry survives.
fn sync_dir(path: &Path) -> Result<(), DurableError> {
    let dir = path.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."));
    File::open(dir).and_then(|d| d.sync_all()).map_err(|e| err(dir, e))
}

/// Replaces `path` with `bytes` durably: temp file, fdatasync, rename, directory fsync.
pub fn write_atomically(path: &Path, bytes: &[u8]) -> Result<(), DurableError> {
    let tmp = path.with_extension("tmp");
    let mut f = File::create(&tmp).map_err(|e| err(&tmp, e))?;
    f.write_all(bytes).map_err(|e| err(&tmp, e))?;
    f.sync_data().map_err(|e| err(&tmp, e))?;
    std::fs::rename(&tmp, path).map_err(|e| err(path, e))?;
    sync_dir(path)
}

/// Opens `path` for reading and writing with all its bytes; a file that
/// did not exist is created at `initial_len` bytes (zeros) and made durable
/// with its directory entry before anything is written to it.
fn open_durably(path: &Path, initial_len: u64) -> Result<(File, Vec<u8>), DurableError> {
    let created = !path.exists();
    let mut file =
        OpenOptions::new().read(true).write(true).create(true).truncate(false).open(path).map_err(|e| err(path, e))?;
    if created {
        file.set_len(initial_len).map_err(|e| err(path, e))?;
        file.sync_all().map_err(|e| err(path, e))?;
        sync_dir(path)?;
    }
    let mut bytes = Vec::new();
    file.read_to_end(&mut bytes).map_err(|e| err(path, e))?;
    Ok((file, bytes))
}

/// Bytes of a record's frame: u32 length, then 8 bytes of the payload's blake3.
const FRAME_BYTES: usize = 12;
/// Largest record an `AppendLog` accepts (a WAL entry is far smaller).
pub const MAX_RECORD_BYTES: usize = 8 * 1024 * 1024;

fn checksum(payload: &[u8]) -> [u8; 8] {
    let h = Hash::tagged(b"agora/durable-record/1", payload);
    let mut out = [0u8; 8];
    out.copy_from_slice(&h.0[..8]);
    out
}

/// An append-only file of checksummed records.
#[derive(Debug)]
pub struct AppendLog {
    path: PathBuf,
    file: File,
    /// Bytes of whole records in the file.
    len: u64,
}

impl AppendLog {
    /// Opens (or creates) the log and returns it with every whole record.
    /// Whatever follows the last whole, intact record (a write cut short by a
    /// crash) is truncated away, durably.
    pub fn open(path: &Path) -> Result<(AppendLog, Vec<Vec<u8>>), DurableError> {
        let (mut file, bytes) = open_durably(path, 0)?;
        let mut records = Vec::new();
        let mut at = 0usize;
        while bytes.len() - at >= FRAME_BYTES {
            let len = u32::from_le_bytes(bytes[at..at + 4].try_into().unwrap_or_default()) as usize;
            let end = at + FRAME_BYTES + len;
            if len > MAX_RECORD_BYTES || end > bytes.len() {
                break;
            }
            let payload = &bytes[at + FRAME_BYTES..end];
            if checksum(payload) != bytes[at + 4..at + FRAME_BYTES] {
                break;
            }
            records.push(payload.to_vec());
            at = end;
        }
        let len = at as u64;
        if len < bytes.len() as u64 {
            file.set_len(len).map_err(|e| err(path, e))?;
            file.sync_data().map_err(|e| err(path, e))?;
        }
        file.seek(SeekFrom::Start(len)).map_err(|e| err(path, e))?;
        Ok((AppendLog { path: path.to_path_buf(), file, len }, records))
    }

    /// Appends one record; with `sync`, durable (with all before it) on return.
    pub fn append(&mut self, payload: &[u8], sync: bool) -> Result<(), DurableError> {
        if payload.len() > MAX_RECORD_BYTES {
            return Err(err(&self.path, format!("record of {} bytes over {MAX_RECORD_BYTES}", payload.len())));
        }
        let mut frame = Vec::with_capacity(FRAME_BYTES + payload.len());
        frame.extend_from_slice(&(payload.len() as u32).to_le_bytes());
        frame.extend_from_slice(&checksum(payload));
        frame.extend_from_slice(payload);
        self.file.write_all(&frame).map_err(|e| err(&self.path, e))?;
        self.len += frame.len() as u64;
        if sync {
            self.sync()?;
        }
        Ok(())
    }

    /// Makes every append so far durable.
    pub fn sync(&mut self) -> Result<(), DurableError> {
        self.file.sync_data().map_err(|e| err(&self.path, e))
    }

    /// Replaces the whole log with `records`, durably (an empty list truncates in place).
    pub fn rewrite(&mut self, records: &[Vec<u8>]) -> Result<(), DurableError> {
        if records.is_empty() {
            self.file.set_len(0).map_err(|e| err(&self.path, e))?;
            self.file.seek(SeekFrom::Start(0)).map_err(|e| err(&self.path, e))?;
            self.len = 0;
            return self.sync();
        }
        let tmp = self.path.with_extension("rewrite");
        let _ = std::fs::remove_file(&tmp);
        {
            let (mut fresh, _) = AppendLog::open(&tmp)?;
            for r in records {
                fresh.append(r, false)?;
            }
            fresh.sync()?;
        }
        std::fs::rename(&tmp, &self.path).map_err(|e| err(&self.path, e))?;
        sync_dir(&self.path)?;
        let (reopened, _) = AppendLog::open(&self.path)?;
        *self = reopened;
        Ok(())
    }

    /// Bytes of whole records.
    pub fn len(&self) -> u64 {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

/// Bytes of one slot: magic, sequence, payload length, payload, checksum.
const SLOT_BYTES: usize = 256;
const SLOT_MAGIC: &[u8; 4] = b"ags1";
/// Largest payload a slot holds.
pub const MAX_SLOT_PAYLOAD: usize = SLOT_BYTES - 4 - 8 - 2 - 8;

/// A small record kept in two alternating slots, written in place.
#[derive(Debug)]
pub struct SlotFile {
    path: PathBuf,
    file: File,
    seq: u64,
}

impl SlotFile {
    /// Opens (or creates, durably) the file; returns it with the newest intact payload.
    pub fn open(path: &Path) -> Result<(SlotFile, Option<Vec<u8>>), DurableError> {
        let (file, bytes) = open_durably(path, 2 * SLOT_BYTES as u64)?;
        let best = bytes.chunks(SLOT_BYTES).filter_map(parse_slot).max_by_key(|(seq, _)| *seq);
        let seq = best.as_ref().map_or(0, |(s, _)| *s);
        Ok((SlotFile { path: path.to_path_buf(), file, seq }, best.map(|(_, p)| p)))
    }

    /// Writes `payload` durably: into the older slot, then fdatasync.
    pub fn write(&mut self, payload: &[u8]) -> Result<(), DurableError> {
        if payload.len() > MAX_SLOT_PAYLOAD {
            return Err(err(&self.path, format!("payload of {} bytes over {MAX_SLOT_PAYLOAD}", payload.len())));
        }
        let seq = self.seq + 1;
        let mut slot = Vec::with_capacity(SLOT_BYTES);
        slot.extend_from_slice(SLOT_MAGIC);
        slot.extend_from_slice(&seq.to_le_bytes());
        slot.extend_from_slice(&(payload.len() as u16).to_le_bytes());
        slot.extend_from_slice(payload);
        let sum = checksum(&slot);
        slot.extend_from_slice(&sum);
        slot.resize(SLOT_BYTES, 0);
        let offset = (seq % 2) * SLOT_BYTES as u64;
        self.file.seek(SeekFrom::Start(offset)).map_err(|e| err(&self.path, e))?;
        self.file.write_all(&slot).map_err(|e| err(&self.path, e))?;
        self.file.sync_data().map_err(|e| err(&self.path, e))?;
        self.seq = seq;
        Ok(())
    }
}

fn parse_slot(slot: &[u8]) -> Option<(u64, Vec<u8>)> {
    if slot.len() < SLOT_BYTES || &slot[..4] != SLOT_MAGIC {
        return None;
    }
    let seq = u64::from_le_bytes(slot[4..12].try_into().ok()?);
    let len = u16::from_le_bytes(slot[12..14].try_into().ok()?) as usize;
    if len > MAX_SLOT_PAYLOAD {
        return None;
    }
    let body_end = 14 + len;
    (checksum(&slot[..body_end]) == slot[body_end..body_end + 8]).then(|| (seq, slot[14..body_end].to_vec()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_torn_or_corrupt_tail_is_cut_off_and_whole_records_survive() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("log");
        let (mut log, records) = AppendLog::open(&path).unwrap();
        assert!(records.is_empty());
        log.append(b"one", false).unwrap();
        log.append(b"two", true).unwrap();
        let whole = log.len();
        drop(log);
        // A crash in the middle of the third record's write.
        let mut f = OpenOptions::new().append(true).open(&path).unwrap();
        f.write_all(&[9, 0, 0, 0, 1, 2, 3]).unwrap();
        drop(f);
        let (mut log, records) = AppendLog::open(&path).unwrap();
        assert_eq!(records, vec![b"one".to_vec(), b"two".to_vec()]);
        assert_eq!(std::fs::metadata(&path).unwrap().len(), whole, "the torn tail was truncated");
        log.append(b"three", true).unwrap();
        drop(log);
        // A flipped byte in the last record's payload: it and nothing before is lost.
        let mut bytes = std::fs::read(&path).unwrap();
        let last = bytes.len() - 1;
        bytes[last] ^= 0xff;
        std::fs::write(&path, &bytes).unwrap();
        let (mut log, records) = AppendLog::open(&path).unwrap();
        assert_eq!(records, vec![b"one".to_vec(), b"two".to_vec()]);
        log.rewrite(&[b"kept".to_vec()]).unwrap();
        assert_eq!(AppendLog::open(&path).unwrap().1, vec![b"kept".to_vec()]);
        log.rewrite(&[]).unwrap();
        assert!(AppendLog::open(&path).unwrap().1.is_empty());
    }

    #[test]
    fn a_slot_file_keeps_the_newest_intact_write_even_when_one_slot_is_torn() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("slots");
        let (mut f, none) = SlotFile::open(&path).unwrap();
        assert!(none.is_none());
        f.write(b"first").unwrap();
        f.write(b"second").unwrap();
        f.write(b"third").unwrap();
        drop(f);
        assert_eq!(SlotFile::open(&path).unwrap().1.as_deref(), Some(&b"third"[..]));
        // Tear the slot holding "third" (seq 3 → slot 1): "second" is what was durable before.
        let mut bytes = std::fs::read(&path).unwrap();
        bytes[SLOT_BYTES + 20] ^= 0xff;
        std::fs::write(&path, &bytes).unwrap();
        let (mut f, got) = SlotFile::open(&path).unwrap();
        assert_eq!(got.as_deref(), Some(&b"second"[..]));
        f.write(b"fourth").unwrap();
        assert_eq!(SlotFile::open(&path).unwrap().1.as_deref(), Some(&b"fourth"[..]));
        assert!(f.write(&[0u8; MAX_SLOT_PAYLOAD + 1]).is_err());
    }
}
