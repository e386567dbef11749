//! Publishing files the node writes for the user: a finished fetch's output.
//!
//! A file appears whole or not at all. It is written to a temporary file beside its final
//! name, synced (`fsync`), renamed over the final name, and the directory is synced, so
//! that after a crash the name holds either nothing or every byte — the sequence the
//! ext4 and XFS maintainers give for durable replacement (see "Ensuring data reaches
//! disk", LWN 457667, and `rename(2)`). The output is never written through a symbolic
//! link (it could point anywhere the node may write), and an existing file is replaced
//! only when the user asked for it (`--force`).

use std::fs::{self, File, OpenOptions};
use std::io;
use std::path::{Path, PathBuf};

/// Why an output cannot be written.
#[derive(Debug, thiserror::Error)]
pub(crate) enum OutputError {
    /// The output exists and replacing it was not asked for.
    #[error("{} exists; pass --force to replace it", .0.display())]
    Exists(PathBuf),
    /// The output is a symbolic link.
    #[error("{} is a symbolic link; the node does not write through links", .0.display())]
    Symlink(PathBuf),
    /// The output path has no file name or no directory.
    #[error("{} is not a file path", .0.display())]
    NotAFile(PathBuf),
    /// Reading the source or writing the output failed.
    #[error("cannot write {}: {source}", path.display())]
    Io {
        /// The file concerned.
        path: PathBuf,
        /// The OS error.
        source: io::Error,
    },
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> OutputError + '_ {
    move |source| OutputError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Checks that `out` may be written: not a symbolic link, and absent unless `force`.
pub(crate) fn check_output(out: &Path, force: bool) -> Result<(), OutputError> {
    if out.file_name().is_none() || out.parent().is_none() {
        return Err(OutputError::NotAFile(out.to_path_buf()));
    }
    match fs::symlink_metadata(out) {
        Ok(m) if m.file_type().is_symlink() => Err(OutputError::Symlink(out.to_path_buf())),
        Ok(_) if !force => Err(OutputError::Exists(out.to_path_buf())),
        Ok(m) if m.is_dir() => Err(OutputError::NotAFile(out.to_path_buf())),
        Ok(_) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(io_err(out)(e)),
    }
}

/// Syncs directory `dir`, so that a rename in it survives a crash.
pub(crate) fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// Copies `src` to `out` atomically and durably (see the module docs), refusing what
/// [`check_output`] refuses.
pub(crate) fn publish(src: &Path, out: &Path, force: bool) -> Result<(), OutputError> {
    check_output(out, force)?;
    let dir = out
        .parent()
        .ok_or_else(|| OutputError::NotAFile(out.to_path_buf()))?;
    let name = out
        .file_name()
        .ok_or_else(|| OutputError::NotAFile(out.to_path_buf()))?;
    let mut tmp_name = std::ffi::OsString::from(".");
    tmp_name.push(name);
    tmp_name.push(".peerlab-part");
    let tmp = dir.join(tmp_name);
    {
        let mut from = File::open(src).map_err(io_err(src))?;
        // `create_new`: a link planted at the temporary name is not followed.
        let _ = fs::remove_file(&tmp);
        let mut to = OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&tmp)
            .map_err(io_err(&tmp))?;
        io::copy(&mut from, &mut to).map_err(io_err(&tmp))?;
        to.sync_all().map_err(io_err(&tmp))?;
    }
    // Checked again just before the rename: the output may have appeared meanwhile.
    if let Err(e) = check_output(out, force) {
        let _ = fs::remove_file(&tmp);
        return Err(e);
    }
    fs::rename(&tmp, out).map_err(io_err(out))?;
    sync_dir(dir).map_err(io_err(dir))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn publishes_whole_and_refuses_existing_files_and_links() {
        let d = tempfile::tempdir().unwrap();
        let src = d.path().join("src");
        fs::write(&src, b"content").unwrap();
        let out = d.path().join("out");
        publish(&src, &out, false).unwrap();
        assert_eq!(fs::read(&out).unwrap(), b"content");
        assert!(!d.path().join(".out.peerlab-part").exists());

        fs::write(&src, b"newer").unwrap();
        assert!(matches!(
            publish(&src, &out, false),
            Err(OutputError::Exists(_))
        ));
        assert_eq!(fs::read(&out).unwrap(), b"content", "not overwritten");
        publish(&src, &out, true).unwrap();
        assert_eq!(fs::read(&out).unwrap(), b"newer");

        #[cfg(unix)]
        {
            let target = d.path().join("target");
            fs::write(&target, b"precious").unwrap();
            let link = d.path().join("link");
            std::os::unix::fs::symlink(&target, &link).unwrap();
            for force in [false, true] {
                assert!(matches!(
                    publish(&src, &link, force),
                    Err(OutputError::Symlink(_))
                ));
            }
            assert_eq!(fs::read(&target).unwrap(), b"precious");
        }
    }
}
