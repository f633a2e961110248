//! Where an export's files go: a directory, or a zip archive streamed to any writer (an HTTP
//! response body, a file). Files are produced one after the other; each is spooled first to an
//! anonymous temporary file (unlinked at creation, gone when dropped) so that the export's memory
//! stays bounded while several of its files fill at once.

use std::fs::File;
use std::io::{BufWriter, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use zip::write::SimpleFileOptions;

use super::ExportError;

/// Receives an export's finished files, in order.
pub trait Sink {
    /// Add one file, reading its content to the end.
    fn add_file(&mut self, name: &str, content: &mut dyn Read) -> Result<(), ExportError>;
    /// Complete the output (a zip's central directory); nothing may be added after.
    fn finish(&mut self) -> Result<(), ExportError>;
}

/// Files written into a directory, which must be empty or not exist yet.
pub struct DirSink {
    dir: PathBuf,
    written: Vec<PathBuf>,
}

impl DirSink {
    pub fn create(dir: &Path) -> Result<Self, ExportError> {
        let io = |e: std::io::Error| ExportError::Output(format!("{}: {e}", dir.display()));
        if dir.exists() {
            if std::fs::read_dir(dir).map_err(io)?.next().is_some() {
                return Err(ExportError::Output(format!(
                    "{} is not empty; choose a new or empty directory",
                    dir.display()
                )));
            }
        } else {
            std::fs::create_dir_all(dir).map_err(io)?;
        }
        Ok(DirSink {
            dir: dir.to_path_buf(),
            written: Vec::new(),
        })
    }

    /// The files written so far.
    pub fn files(&self) -> &[PathBuf] {
        &self.written
    }
}

fn check_name(name: &str) -> Result<(), ExportError> {
    let ok = !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'))
        && !name.starts_with('.');
    if ok {
        Ok(())
    } else {
        Err(ExportError::Internal(format!(
            "invalid export file name {name:?}"
        )))
    }
}

impl Sink for DirSink {
    fn add_file(&mut self, name: &str, content: &mut dyn Read) -> Result<(), ExportError> {
        check_name(name)?;
        let path = self.dir.join(name);
        let io = |e: std::io::Error| ExportError::Output(format!("{}: {e}", path.display()));
        let file = File::options()
            .write(true)
            .create_new(true)
            .open(&path)
            .map_err(io)?;
        let mut out = BufWriter::new(file);
        std::io::copy(content, &mut out).map_err(io)?;
        out.flush().map_err(io)?;
        out.get_ref().sync_all().map_err(io)?;
        self.written.push(path);
        Ok(())
    }

    fn finish(&mut self) -> Result<(), ExportError> {
        Ok(())
    }
}

/// A zip archive written as a stream (data descriptors; the writer need not seek), deflated.
pub struct ZipSink<W: Write> {
    zip: Option<zip::ZipWriter<zip::write::StreamWriter<W>>>,
    folder: String,
}

impl<W: Write> ZipSink<W> {
    /// Files go into `folder/` inside the archive, so unzipping makes one directory.
    pub fn new(out: W, folder: &str) -> Self {
        ZipSink {
            zip: Some(zip::ZipWriter::new_stream(out)),
            folder: folder.to_string(),
        }
    }
}

fn zip_err(e: zip::result::ZipError) -> ExportError {
    match e {
        zip::result::ZipError::Io(e) => ExportError::Output(e.to_string()),
        other => ExportError::Internal(format!("zip: {other}")),
    }
}

impl<W: Write> Sink for ZipSink<W> {
    fn add_file(&mut self, name: &str, content: &mut dyn Read) -> Result<(), ExportError> {
        check_name(name)?;
        let zip = self
            .zip
            .as_mut()
            .ok_or_else(|| ExportError::Internal("the zip archive is already finished".into()))?;
        let options = SimpleFileOptions::default()
            .compression_method(zip::CompressionMethod::Deflated)
            .large_file(true);
        zip.start_file(format!("{}/{name}", self.folder), options)
            .map_err(zip_err)?;
        std::io::copy(content, zip).map_err(|e| ExportError::Output(e.to_string()))?;
        Ok(())
    }

    fn finish(&mut self) -> Result<(), ExportError> {
        if let Some(zip) = self.zip.take() {
            let mut out = zip.finish().map_err(zip_err)?;
            out.flush()
                .map_err(|e| ExportError::Output(e.to_string()))?;
        }
        Ok(())
    }
}

/// A file being filled before it goes to the sink.
pub struct Spool {
    out: BufWriter<File>,
}

impl Spool {
    pub fn new() -> Result<Self, ExportError> {
        let file = tempfile::tempfile()
            .map_err(|e| ExportError::Output(format!("could not create a temporary file: {e}")))?;
        Ok(Spool {
            out: BufWriter::with_capacity(64 * 1024, file),
        })
    }

    /// Hand the finished content to the sink.
    pub fn into_sink(self, name: &str, sink: &mut dyn Sink) -> Result<(), ExportError> {
        let io = |e: std::io::Error| ExportError::Output(format!("temporary file: {e}"));
        let mut file = self.out.into_inner().map_err(|e| io(e.into_error()))?;
        file.seek(SeekFrom::Start(0)).map_err(io)?;
        sink.add_file(name, &mut file)
    }
}

impl Write for Spool {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.out.write(buf)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.out.flush()
    }
}

/// Unpack an export's zip (from the admin API or the console) into `dir`, which must be empty or
/// not exist, dropping the archive's top folder. Refuses an archive without the README (the last
/// file an export writes, so a cut-off download is caught) and any entry whose path would leave
/// `dir`. Returns the files written.
pub fn unpack_zip(zip_file: &Path, dir: &Path) -> Result<Vec<PathBuf>, ExportError> {
    let io = |e: std::io::Error| ExportError::Output(format!("{}: {e}", zip_file.display()));
    let file = File::open(zip_file).map_err(io)?;
    let mut archive = zip::ZipArchive::new(std::io::BufReader::new(file)).map_err(|e| {
        ExportError::Output(format!("the export is not a complete zip archive: {e}"))
    })?;
    let has_readme = archive
        .file_names()
        .any(|n| n.rsplit('/').next() == Some("README.txt"));
    if !has_readme {
        return Err(ExportError::Output(
            "the export is incomplete (no README.txt); run it again".into(),
        ));
    }
    let mut sink = DirSink::create(dir)?;
    for i in 0..archive.len() {
        let mut entry = archive.by_index(i).map_err(zip_err)?;
        if entry.is_dir() {
            continue;
        }
        let name = entry
            .enclosed_name()
            .and_then(|p| p.file_name().map(|n| n.to_string_lossy().to_string()))
            .ok_or_else(|| {
                ExportError::Output(format!("unsafe path in the export: {:?}", entry.name()))
            })?;
        sink.add_file(&name, &mut entry)?;
    }
    Ok(sink.written)
}
