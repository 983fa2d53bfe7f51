//! The deployable package whose size the benchmark reports: the binary stored as
//! `bootstrap` (mode 755), deflated, as `cargo lambda build --output-format zip` makes it.

use std::io::{Cursor, Write};
use std::path::Path;

use super::StartupError;

/// The size of the deployable zip: `binary` stored as `bootstrap` (mode 755), deflated.
pub fn zip_size(binary: &Path) -> Result<u64, StartupError> {
    Ok(zip_package(binary)?.len() as u64)
}

/// The deployable zip of `binary`.
fn zip_package(binary: &Path) -> Result<Vec<u8>, StartupError> {
    let bytes = std::fs::read(binary).map_err(|source| StartupError::Read {
        path: binary.to_path_buf(),
        source,
    })?;
    let zip_error = |source| StartupError::Zip {
        path: binary.to_path_buf(),
        source,
    };
    let mut writer = zip::ZipWriter::new(Cursor::new(Vec::new()));
    let options = zip::write::SimpleFileOptions::default()
        .compression_method(zip::CompressionMethod::Deflated)
        .unix_permissions(0o755);
    writer.start_file("bootstrap", options).map_err(zip_error)?;
    writer
        .write_all(&bytes)
        .map_err(|error| zip_error(error.into()))?;
    Ok(writer.finish().map_err(zip_error)?.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_zip_holds_the_binary_as_bootstrap_deflated() {
        // GIVEN a compressible "binary"
        let dir = std::env::temp_dir().join(format!("startup-zip-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let binary = dir.join("connect");
        std::fs::write(&binary, vec![b'x'; 100_000]).expect("binary written");

        // WHEN it is zipped
        let zipped = zip_package(&binary).expect("zipped");

        // THEN the zip is much smaller than the binary, and holds it as an executable
        // `bootstrap`, deflated
        assert!(zipped.len() < 10_000, "{} bytes", zipped.len());
        assert_eq!(zip_size(&binary).expect("zipped"), zipped.len() as u64);
        let mut archive = zip::ZipArchive::new(Cursor::new(zipped)).expect("a zip");
        assert_eq!(archive.len(), 1);
        let mut entry = archive.by_index(0).expect("one entry");
        assert_eq!(entry.name().expect("a UTF-8 name"), "bootstrap");
        assert_eq!(entry.compression(), zip::CompressionMethod::Deflated);
        assert_eq!(entry.unix_mode().map(|mode| mode & 0o777), Some(0o755));
        let mut content = Vec::new();
        std::io::Read::read_to_end(&mut entry, &mut content).expect("inflated");
        assert_eq!(content, vec![b'x'; 100_000]);
        std::fs::remove_dir_all(&dir).expect("temp dir removed");
    }
}
