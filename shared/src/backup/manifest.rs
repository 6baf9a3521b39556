//! The manifest of a backup: JSON Lines, a header line and then one line per archived
//! original, carrying everything a restore needs to rebuild the file and its row on an empty
//! machine. Lines, not one document, so that writing and reading stream at any size.

use std::io::{self, BufRead, BufReader, Read, Write};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::model::{ArchivedImage, BackupId};

/// Written in the header so a reader knows what it holds.
pub const FORMAT: &str = "stayler-backup-manifest";
pub const VERSION: u32 = 1;

/// The first line.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Header {
    pub format: String,
    pub version: u32,
    pub backup_id: BackupId,
    pub created_at: DateTime<Utc>,
    pub completed_at: DateTime<Utc>,
    pub compression_level: i32,
    pub file_count: u64,
}

impl Header {
    pub fn new(
        backup_id: BackupId,
        created_at: DateTime<Utc>,
        completed_at: DateTime<Utc>,
        compression_level: i32,
        file_count: u64,
    ) -> Self {
        Self {
            format: FORMAT.to_owned(),
            version: VERSION,
            backup_id,
            created_at,
            completed_at,
            compression_level,
            file_count,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    #[error("reading the manifest: {0}")]
    Io(#[from] io::Error),
    #[error("line {line} of the manifest: {error}")]
    Parse { line: usize, error: serde_json::Error },
    #[error("not a backup manifest (format `{format}`, version {version})")]
    Unsupported { format: String, version: u32 },
    #[error("the manifest is empty")]
    Empty,
}

/// Writes the header, then each entry, one JSON object per line.
pub fn write<'a>(
    mut out: impl Write,
    header: &Header,
    entries: impl IntoIterator<Item = &'a ArchivedImage>,
) -> io::Result<()> {
    write_header(&mut out, header)?;
    for entry in entries {
        write_entry(&mut out, entry)?;
    }
    out.flush()
}

/// The first line.
pub fn write_header(mut out: impl Write, header: &Header) -> io::Result<()> {
    serde_json::to_writer(&mut out, header)?;
    out.write_all(b"\n")
}

/// One entry's line.
pub fn write_entry(mut out: impl Write, entry: &ArchivedImage) -> io::Result<()> {
    serde_json::to_writer(&mut out, entry)?;
    out.write_all(b"\n")
}

/// Reads a manifest: its header now, its entries one by one.
pub struct Reader<R> {
    pub header: Header,
    lines: std::io::Lines<BufReader<R>>,
    line: usize,
}

impl<R: Read> Reader<R> {
    pub fn new(source: R) -> Result<Self, ManifestError> {
        let mut lines = BufReader::new(source).lines();
        let first = lines.next().ok_or(ManifestError::Empty)??;
        let header: Header = serde_json::from_str(&first).map_err(|error| ManifestError::Parse { line: 1, error })?;
        if header.format != FORMAT || header.version != VERSION {
            return Err(ManifestError::Unsupported { format: header.format, version: header.version });
        }
        Ok(Self { header, lines, line: 1 })
    }
}

impl<R: Read> Iterator for Reader<R> {
    type Item = Result<ArchivedImage, ManifestError>;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            let line = match self.lines.next()? {
                Ok(line) => line,
                Err(error) => return Some(Err(error.into())),
            };
            self.line += 1;
            if line.trim().is_empty() {
                continue;
            }
            let line_number = self.line;
            return Some(
                serde_json::from_str(&line).map_err(|error| ManifestError::Parse { line: line_number, error }),
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use uuid::Uuid;

    use super::*;
    use crate::model::{ArchiveMethod, ImageFormat, ImageId, ImageType, OwnerId, OwnerType};

    fn entry() -> ArchivedImage {
        ArchivedImage {
            archive_path: PathBuf::from("2026-01-02/b/images/user/o/images/i.jpg.zst"),
            image_id: ImageId::new(),
            owner_id: OwnerId(Uuid::new_v4()),
            owner_type: OwnerType::User,
            image_type: ImageType::Result,
            original_name: "look \"one\".jpg".to_owned(),
            file_path: "images/result/o/images/i.jpg".to_owned(),
            format: ImageFormat::Jpeg,
            mime_type: "image/jpeg".to_owned(),
            width: 10,
            height: 20,
            is_public: true,
            tags: vec!["summer".to_owned()],
            metadata: serde_json::json!({"note": "line\nbreak"}),
            checksum: "ab".repeat(32),
            file_size: 1234,
            compressed_size: 1250,
            method: ArchiveMethod::Raw,
            source_ids: vec![ImageId::new()],
            created_at: Utc::now(),
        }
    }

    #[test]
    fn a_manifest_reads_back_what_was_written() {
        let entries = vec![entry(), ArchivedImage { source_ids: vec![], ..entry() }];
        let header = Header::new(BackupId::new(), Utc::now(), Utc::now(), 6, 2);
        let mut bytes = Vec::new();
        write(&mut bytes, &header, &entries).unwrap();
        assert_eq!(bytes.iter().filter(|&&b| b == b'\n').count(), 3, "one line per entry");
        let reader = Reader::new(&bytes[..]).unwrap();
        assert_eq!(reader.header, header);
        let back: Vec<ArchivedImage> = reader.collect::<Result<_, _>>().unwrap();
        assert_eq!(back, entries);
    }

    #[test]
    fn a_foreign_file_is_refused() {
        assert!(matches!(Reader::new(&b""[..]), Err(ManifestError::Empty)));
        assert!(matches!(Reader::new(&b"{\"x\":1}\n"[..]), Err(ManifestError::Parse { line: 1, .. })));
        let mut header = serde_json::to_value(Header::new(BackupId::new(), Utc::now(), Utc::now(), 3, 0)).unwrap();
        header["version"] = 99.into();
        let text = format!("{header}\n");
        assert!(matches!(Reader::new(text.as_bytes()), Err(ManifestError::Unsupported { version: 99, .. })));
    }

    #[test]
    fn a_damaged_line_names_its_number() {
        let header = Header::new(BackupId::new(), Utc::now(), Utc::now(), 3, 1);
        let mut bytes = Vec::new();
        write(&mut bytes, &header, &[entry()]).unwrap();
        bytes.extend_from_slice(b"{not json\n");
        let results: Vec<_> = Reader::new(&bytes[..]).unwrap().collect();
        assert!(results[0].is_ok());
        assert!(matches!(results[1], Err(ManifestError::Parse { line: 3, .. })));
    }
}
