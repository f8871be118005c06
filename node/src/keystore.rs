//! Named ed25519 keys under `HOME/keys/NAME.json`, mode 0600 in a 0700
//! directory. New keys never overwrite old ones, and a key file that other
//! users can read is refused (as ssh does), since it holds a spending key.

use std::fs::{self, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use agora_protocol::{Address, Keypair};
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use crate::error::Error;

/// Longest key name.
pub const MAX_KEY_NAME_LEN: usize = 64;
/// The key-file format version written today.
const KEY_FILE_VERSION: u32 = 1;

/// What a key file holds. The address is stored only as a check against
/// tampering and typos; the secret is the source of truth.
#[derive(Serialize, Deserialize)]
struct KeyFile {
    version: u32,
    name: String,
    address: Address,
    secret_key: String,
}

/// A key with its name and where it lives.
#[derive(Debug)]
pub struct StoredKey {
    pub name: String,
    pub path: PathBuf,
    pub keypair: Keypair,
}

impl StoredKey {
    pub fn address(&self) -> Address {
        self.keypair.address()
    }
}

/// The key directory of a home directory.
pub fn keys_dir(home: &Path) -> PathBuf {
    home.join("keys")
}

fn check_name(name: &str) -> Result<(), Error> {
    let ok = !name.is_empty()
        && name.len() <= MAX_KEY_NAME_LEN
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    if ok { Ok(()) } else { Err(Error::KeyName(name.to_string())) }
}

fn key_path(home: &Path, name: &str) -> PathBuf {
    keys_dir(home).join(format!("{name}.json"))
}

/// Generates a new key named `name`; fails if one exists.
pub fn create(home: &Path, name: &str) -> Result<StoredKey, Error> {
    create_from(home, name, Keypair::generate()?)
}

/// Stores a given key pair under `name` (the testnet uses deterministic keys).
pub fn create_from(home: &Path, name: &str, keypair: Keypair) -> Result<StoredKey, Error> {
    check_name(name)?;
    let dir = keys_dir(home);
    fs::DirBuilder::new().recursive(true).mode(0o700).create(&dir).map_err(Error::io(&dir))?;
    let path = key_path(home, name);
    let file = KeyFile {
        version: KEY_FILE_VERSION,
        name: name.to_string(),
        address: keypair.address(),
        secret_key: hex::encode(keypair.secret_bytes().as_ref()),
    };
    let json = Zeroizing::new(
        serde_json::to_vec_pretty(&file).map_err(|e| Error::KeyFile { path: path.clone(), reason: e.to_string() })?,
    );
    // create_new makes "exists" and "create" one atomic step: no overwrite race.
    let mut out = match OpenOptions::new().write(true).create_new(true).mode(0o600).open(&path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            return Err(Error::KeyExists { name: name.to_string(), path });
        }
        Err(e) => return Err(Error::Io { path, source: e }),
    };
    out.write_all(&json).and_then(|_| out.write_all(b"\n")).and_then(|_| out.sync_all()).map_err(Error::io(&path))?;
    Ok(StoredKey { name: name.to_string(), path, keypair })
}

/// Loads the key named `name`.
pub fn load(home: &Path, name: &str) -> Result<StoredKey, Error> {
    check_name(name)?;
    let path = key_path(home, name);
    if !path.exists() {
        return Err(Error::KeyNotFound { name: name.to_string(), dir: keys_dir(home) });
    }
    load_file(&path)
}

fn load_file(path: &Path) -> Result<StoredKey, Error> {
    let mode = fs::metadata(path).map_err(Error::io(path))?.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        return Err(Error::KeyPermissions { path: path.to_path_buf(), mode });
    }
    let raw = Zeroizing::new(fs::read(path).map_err(Error::io(path))?);
    let malformed = |reason: String| Error::KeyFile { path: path.to_path_buf(), reason };
    let file: KeyFile = serde_json::from_slice(&raw).map_err(|e| malformed(e.to_string()))?;
    let secret = Zeroizing::new(file.secret_key);
    if file.version != KEY_FILE_VERSION {
        return Err(malformed(format!("unsupported version {}", file.version)));
    }
    let keypair = Keypair::from_secret_hex(&secret).map_err(|e| malformed(e.to_string()))?;
    if keypair.address() != file.address {
        return Err(malformed("the stored address does not match the secret key".into()));
    }
    Ok(StoredKey { name: file.name, path: path.to_path_buf(), keypair })
}

/// Every key in the home directory, sorted by name. A missing directory is
/// an empty list; an unreadable key file is an error naming it.
pub fn list(home: &Path) -> Result<Vec<StoredKey>, Error> {
    let dir = keys_dir(home);
    let entries = match fs::read_dir(&dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => {
            return Err(Error::Io { path: dir, source: e });
        }
    };
    let mut keys = Vec::new();
    for entry in entries {
        let path = entry.map_err(Error::io(&dir))?.path();
        if path.extension().is_some_and(|e| e == "json") {
            keys.push(load_file(&path)?);
        }
    }
    keys.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(keys)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn created_keys_load_back_with_mode_0600() {
        let home = tempfile::tempdir().unwrap();
        let k = create(home.path(), "alice").unwrap();
        let mode = fs::metadata(&k.path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        assert_eq!(load(home.path(), "alice").unwrap().address(), k.address());
        assert_eq!(list(home.path()).unwrap().len(), 1);
    }

    #[test]
    fn never_overwrites_an_existing_key() {
        let home = tempfile::tempdir().unwrap();
        let first = create(home.path(), "alice").unwrap();
        assert!(matches!(create(home.path(), "alice"), Err(Error::KeyExists { .. })));
        assert_eq!(load(home.path(), "alice").unwrap().address(), first.address());
    }

    #[test]
    fn refuses_world_readable_and_tampered_files() {
        let home = tempfile::tempdir().unwrap();
        let k = create(home.path(), "alice").unwrap();
        fs::set_permissions(&k.path, fs::Permissions::from_mode(0o644)).unwrap();
        assert!(matches!(load(home.path(), "alice"), Err(Error::KeyPermissions { .. })));
        fs::set_permissions(&k.path, fs::Permissions::from_mode(0o600)).unwrap();
        let text = fs::read_to_string(&k.path).unwrap();
        let other = Keypair::from_seed_phrase("other").address().to_string();
        fs::write(&k.path, text.replace(&k.address().to_string(), &other)).unwrap();
        assert!(matches!(load(home.path(), "alice"), Err(Error::KeyFile { .. })));
    }

    #[test]
    fn rejects_bad_names() {
        let home = tempfile::tempdir().unwrap();
        for bad in ["", "../x", "a/b", "with space", &"x".repeat(65)] {
            assert!(matches!(create(home.path(), bad), Err(Error::KeyName(_))), "{bad:?}");
        }
        assert!(matches!(load(home.path(), "nobody"), Err(Error::KeyNotFound { .. })));
    }
}
