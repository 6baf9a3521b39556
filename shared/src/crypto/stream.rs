//! Encrypted files: the STREAM construction (Hoang, Reyhanitabar, Rogaway, Vizár) over
//! XChaCha20-Poly1305, which encrypts a file of any size in fixed chunks with bounded memory
//! and detects a changed, reordered, dropped or truncated chunk.
//!
//! Format: a [`HEADER_LEN`]-byte header (magic `SENC`, version 1, a random 19-byte nonce
//! prefix), then chunks of [`CHUNK_LEN`] plaintext bytes, each followed by its 16-byte tag.
//! The final chunk is always shorter than [`CHUNK_LEN`] (empty when the plaintext length is
//! a multiple of it) and is encrypted with the last-chunk flag; every chunk's nonce is the
//! prefix ‖ its index (32-bit big-endian) ‖ that flag. Associated data: a label, the image
//! id and the variant name (`original`, `small`…), so a file copied to another image or
//! variant is refused. Lengths and chunk offsets follow from this alone ([`ciphertext_len`],
//! [`plaintext_len`], [`ciphertext_range`]), so a byte range is decrypted from the chunks
//! that hold it.

use std::io::{self, Read, Write};
use std::ops::Range;

use chacha20poly1305::XChaCha20Poly1305;
use chacha20poly1305::aead::OsRng;
use chacha20poly1305::aead::rand_core::RngCore;
use chacha20poly1305::aead::stream::{NewStream, StreamBE32, StreamPrimitive};

use super::{CryptoError, DataKey, associated_data};
use crate::model::ImageId;

/// Plaintext bytes per chunk (64 KiB).
pub const CHUNK_LEN: u64 = 64 * 1024;
/// The Poly1305 tag after each chunk, in bytes.
pub const TAG_LEN: u64 = 16;
/// A full chunk as stored: plaintext and tag.
pub const SEALED_CHUNK_LEN: u64 = CHUNK_LEN + TAG_LEN;
const MAGIC: [u8; 4] = *b"SENC";
const VERSION: u8 = 1;
/// XChaCha20's 24-byte nonce less STREAM's 4-byte counter and 1-byte last-chunk flag.
const NONCE_PREFIX_LEN: usize = 19;
/// Magic, version and nonce prefix.
pub const HEADER_LEN: u64 = (MAGIC.len() + 1 + NONCE_PREFIX_LEN) as u64;
const STREAM_LABEL: &str = "stayler-stream-v1";

type Stream = StreamBE32<XChaCha20Poly1305>;

/// Length of the encrypted form of `plaintext_len` bytes.
pub fn ciphertext_len(plaintext_len: u64) -> u64 {
    HEADER_LEN + plaintext_len + TAG_LEN * (plaintext_len / CHUNK_LEN + 1)
}

/// Length of the plaintext of `ciphertext_len` encrypted bytes; `None` when no plaintext
/// encrypts to that length (a truncated or padded file).
pub fn plaintext_len(ciphertext_len: u64) -> Option<u64> {
    let body = ciphertext_len.checked_sub(HEADER_LEN)?;
    let (full, rest) = (body / SEALED_CHUNK_LEN, body % SEALED_CHUNK_LEN);
    (rest >= TAG_LEN).then(|| full * CHUNK_LEN + rest - TAG_LEN)
}

/// Offset of chunk `index` in the encrypted file.
pub fn chunk_offset(index: u64) -> u64 {
    HEADER_LEN + index * SEALED_CHUNK_LEN
}

/// The encrypted bytes that hold a plaintext byte range.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChunkRange {
    /// Index of the chunk holding the range's first byte.
    pub first_chunk: u64,
    /// The encrypted bytes to read: whole chunks, from `first_chunk` to the one holding the
    /// range's last byte.
    pub ciphertext: Range<u64>,
    /// Plaintext bytes to skip at the start of `first_chunk` to reach the range's first byte.
    pub skip: u64,
}

/// Which encrypted bytes of a file of `plaintext_len` bytes hold `range` of its plaintext;
/// `None` for an empty range or one that ends past the plaintext. Decrypt them with
/// [`DecryptingReader::from_chunk`] (the header, the first [`HEADER_LEN`] bytes, is needed
/// too), skip [`ChunkRange::skip`] bytes, then read `range.end - range.start` bytes.
pub fn ciphertext_range(plaintext_len: u64, range: Range<u64>) -> Option<ChunkRange> {
    if range.start >= range.end || range.end > plaintext_len {
        return None;
    }
    let first_chunk = range.start / CHUNK_LEN;
    let last_chunk = (range.end - 1) / CHUNK_LEN;
    let end = chunk_offset(last_chunk + 1).min(ciphertext_len(plaintext_len));
    Some(ChunkRange {
        first_chunk,
        ciphertext: chunk_offset(first_chunk)..end,
        skip: range.start - first_chunk * CHUNK_LEN,
    })
}

/// The header of an encrypted file: the nonce prefix every chunk's nonce starts with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StreamHeader {
    nonce_prefix: [u8; NONCE_PREFIX_LEN],
}

impl StreamHeader {
    fn random() -> Self {
        let mut nonce_prefix = [0u8; NONCE_PREFIX_LEN];
        OsRng.fill_bytes(&mut nonce_prefix);
        Self { nonce_prefix }
    }

    fn to_bytes(self) -> [u8; HEADER_LEN as usize] {
        let mut bytes = [0u8; HEADER_LEN as usize];
        bytes[..MAGIC.len()].copy_from_slice(&MAGIC);
        bytes[MAGIC.len()] = VERSION;
        bytes[MAGIC.len() + 1..].copy_from_slice(&self.nonce_prefix);
        bytes
    }

    /// The header in the first [`HEADER_LEN`] bytes of `bytes`.
    pub fn parse(bytes: &[u8]) -> Result<Self, CryptoError> {
        let bytes = bytes.get(..HEADER_LEN as usize).ok_or(CryptoError::Truncated)?;
        if bytes[..MAGIC.len()] != MAGIC {
            return Err(CryptoError::BadFormat("an encrypted file starts with SENC"));
        }
        if bytes[MAGIC.len()] != VERSION {
            return Err(CryptoError::BadFormat("unknown encrypted file version"));
        }
        let mut nonce_prefix = [0u8; NONCE_PREFIX_LEN];
        nonce_prefix.copy_from_slice(&bytes[MAGIC.len() + 1..]);
        Ok(Self { nonce_prefix })
    }

    /// Reads the header from the start of an encrypted file.
    pub fn read_from(reader: &mut impl Read) -> Result<Self, CryptoError> {
        let mut bytes = [0u8; HEADER_LEN as usize];
        reader.read_exact(&mut bytes).map_err(|error| match error.kind() {
            io::ErrorKind::UnexpectedEof => CryptoError::Truncated,
            _ => CryptoError::Io(error),
        })?;
        Self::parse(&bytes)
    }

    fn stream(&self, key: &DataKey) -> Stream {
        Stream::from_aead(key.cipher(), (&self.nonce_prefix).into())
    }
}

fn chunk_index(index: u64) -> Result<u32, CryptoError> {
    u32::try_from(index).map_err(|_| CryptoError::BadFormat("an encrypted file has at most 2^32 chunks"))
}

/// Encrypts what is written to it into `inner`, chunk by chunk, holding at most one chunk.
/// [`finish`](Self::finish) writes the final chunk and must be called: a writer dropped
/// without it leaves a file that never decrypts. `flush` flushes `inner` only, since only
/// whole chunks are written.
pub struct EncryptingWriter<W: Write> {
    inner: W,
    stream: Stream,
    aad: Vec<u8>,
    buffer: Vec<u8>,
    next_chunk: u64,
}

impl<W: Write> EncryptingWriter<W> {
    /// Writes the header to `inner` and returns the writer of variant `variant` of image
    /// `image_id`, encrypted with its data key.
    pub fn new(mut inner: W, key: &DataKey, image_id: ImageId, variant: &str) -> io::Result<Self> {
        let header = StreamHeader::random();
        inner.write_all(&header.to_bytes())?;
        Ok(Self {
            inner,
            stream: header.stream(key),
            aad: associated_data(STREAM_LABEL, image_id, variant),
            buffer: Vec::with_capacity(SEALED_CHUNK_LEN as usize),
            next_chunk: 0,
        })
    }

    fn seal_chunk(&mut self, last: bool) -> io::Result<()> {
        let index = chunk_index(self.next_chunk).map_err(CryptoError::into_io)?;
        self.stream
            .encrypt_in_place(index, last, &self.aad, &mut self.buffer)
            .map_err(|_| io::Error::other("encrypting a chunk failed"))?;
        self.inner.write_all(&self.buffer)?;
        self.buffer.clear();
        self.next_chunk += 1;
        Ok(())
    }

    /// Writes the final chunk, flushes, and gives the inner writer back.
    pub fn finish(mut self) -> io::Result<W> {
        self.seal_chunk(true)?;
        self.inner.flush()?;
        Ok(self.inner)
    }
}

impl<W: Write> Write for EncryptingWriter<W> {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        let room = CHUNK_LEN as usize - self.buffer.len();
        let taken = room.min(data.len());
        self.buffer.extend_from_slice(&data[..taken]);
        // A full chunk is sealed at once, so the final one is always shorter than a chunk.
        if self.buffer.len() == CHUNK_LEN as usize {
            self.seal_chunk(false)?;
        }
        Ok(taken)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// Decrypts an encrypted file read from `inner`, chunk by chunk, holding at most one chunk.
/// A chunk that fails to authenticate, or an end before the final chunk, is an error of kind
/// `InvalidData` whose [`CryptoError::in_io_error`] says which; no byte of a chunk is
/// returned before its tag is checked.
pub struct DecryptingReader<R: Read> {
    inner: R,
    stream: Stream,
    aad: Vec<u8>,
    buffer: Vec<u8>,
    consumed: usize,
    next_chunk: u64,
    finished: bool,
}

impl<R: Read> DecryptingReader<R> {
    /// Reads the header from `inner` and returns the reader of variant `variant` of image
    /// `image_id`.
    pub fn new(mut inner: R, key: &DataKey, image_id: ImageId, variant: &str) -> Result<Self, CryptoError> {
        let header = StreamHeader::read_from(&mut inner)?;
        Ok(Self::from_chunk(inner, &header, 0, key, image_id, variant))
    }

    /// A reader that starts at chunk `first_chunk`: `inner` is positioned at
    /// [`chunk_offset`]`(first_chunk)` of the file whose header is `header` (a ranged read).
    /// It ends with an error if `inner` ends before the file's final chunk, so read only
    /// as many bytes as the range holds (`Read::take`).
    pub fn from_chunk(
        inner: R,
        header: &StreamHeader,
        first_chunk: u64,
        key: &DataKey,
        image_id: ImageId,
        variant: &str,
    ) -> Self {
        Self {
            inner,
            stream: header.stream(key),
            aad: associated_data(STREAM_LABEL, image_id, variant),
            buffer: Vec::with_capacity(SEALED_CHUNK_LEN as usize),
            consumed: 0,
            next_chunk: first_chunk,
            finished: false,
        }
    }

    /// Reads and decrypts the next chunk into the buffer.
    fn open_chunk(&mut self) -> Result<(), CryptoError> {
        self.buffer.clear();
        self.consumed = 0;
        let mut limited = (&mut self.inner).take(SEALED_CHUNK_LEN);
        limited.read_to_end(&mut self.buffer)?;
        let filled = self.buffer.len() as u64;
        if filled < TAG_LEN {
            // Nothing at all after a full chunk: the final chunk was cut off.
            return Err(CryptoError::Truncated);
        }
        // Only the final chunk is shorter than a full one; a full one is never final.
        let last = filled < SEALED_CHUNK_LEN;
        let index = chunk_index(self.next_chunk)?;
        self.stream
            .decrypt_in_place(index, last, &self.aad, &mut self.buffer)
            .map_err(|_| CryptoError::AuthenticationFailed)?;
        self.next_chunk += 1;
        self.finished = last;
        Ok(())
    }
}

impl<R: Read> Read for DecryptingReader<R> {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        if out.is_empty() {
            return Ok(0);
        }
        while self.consumed == self.buffer.len() {
            if self.finished {
                return Ok(0);
            }
            if let Err(error) = self.open_chunk() {
                // Nothing of a failed chunk may be read.
                self.buffer.clear();
                self.consumed = 0;
                return Err(error.into_io());
            }
        }
        let available = &self.buffer[self.consumed..];
        let count = available.len().min(out.len());
        out[..count].copy_from_slice(&available[..count]);
        self.consumed += count;
        Ok(count)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn encrypt(key: &DataKey, image: ImageId, variant: &str, plain: &[u8]) -> Vec<u8> {
        let mut writer = EncryptingWriter::new(Vec::new(), key, image, variant).unwrap();
        // Uneven writes, so that chunk boundaries fall inside them.
        for piece in plain.chunks(40_000) {
            writer.write_all(piece).unwrap();
        }
        writer.finish().unwrap()
    }

    fn decrypt(key: &DataKey, image: ImageId, variant: &str, sealed: &[u8]) -> Result<Vec<u8>, CryptoError> {
        let mut reader = DecryptingReader::new(sealed, key, image, variant)?;
        let mut plain = Vec::new();
        match reader.read_to_end(&mut plain) {
            Ok(_) => Ok(plain),
            Err(error) => Err(match CryptoError::in_io_error(&error) {
                Some(CryptoError::Truncated) => CryptoError::Truncated,
                Some(CryptoError::AuthenticationFailed) => CryptoError::AuthenticationFailed,
                _ => CryptoError::Io(error),
            }),
        }
    }

    fn bytes(len: usize) -> Vec<u8> {
        let mut data = vec![0u8; len];
        OsRng.fill_bytes(&mut data);
        data
    }

    const C: usize = CHUNK_LEN as usize;

    #[test]
    fn files_of_every_size_round_trip() {
        let (key, image) = (DataKey::generate(), ImageId::new());
        for len in [0, 1, C - 1, C, C + 1, 2 * C, 3 * C + 17, 5 * 1024 * 1024 + 3] {
            let plain = bytes(len);
            let sealed = encrypt(&key, image, "original", &plain);
            assert_eq!(sealed.len() as u64, ciphertext_len(len as u64), "length {len}");
            assert_eq!(plaintext_len(sealed.len() as u64), Some(len as u64));
            assert_eq!(decrypt(&key, image, "original", &sealed).unwrap(), plain, "length {len}");
        }
    }

    #[test]
    fn the_size_arithmetic_matches_real_encryption() {
        let key = DataKey::generate();
        let mut lengths: Vec<usize> = (0..40).collect();
        for chunks in 1..4 {
            lengths.extend([chunks * C - 1, chunks * C, chunks * C + 1, chunks * C + 1000]);
        }
        for len in lengths {
            let sealed = encrypt(&key, ImageId::new(), "small", &bytes(len));
            assert_eq!(sealed.len() as u64, ciphertext_len(len as u64), "length {len}");
            assert_eq!(plaintext_len(sealed.len() as u64), Some(len as u64), "length {len}");
        }
        // Lengths no file has: shorter than a header and a tag, or a final chunk without
        // room for its tag.
        for impossible in [0, HEADER_LEN, HEADER_LEN + TAG_LEN - 1, HEADER_LEN + SEALED_CHUNK_LEN + 3] {
            assert_eq!(plaintext_len(impossible), None, "{impossible}");
        }
        assert_eq!(chunk_offset(2), HEADER_LEN + 2 * SEALED_CHUNK_LEN);
    }

    #[test]
    fn a_changed_byte_anywhere_is_detected() {
        let (key, image) = (DataKey::generate(), ImageId::new());
        let sealed = encrypt(&key, image, "original", &bytes(2 * C + 100));
        let header = HEADER_LEN as usize;
        let cases = [
            (0, "magic"),
            (4, "version"),
            (header - 1, "nonce prefix"),
            (header, "first chunk's body"),
            (header + C + 3, "first chunk's tag"),
            (header + 2 * (C + 16) + 50, "last chunk's body"),
            (sealed.len() - 1, "last chunk's tag"),
        ];
        for (at, what) in cases {
            let mut tampered = sealed.clone();
            tampered[at] ^= 0x01;
            let result = decrypt(&key, image, "original", &tampered);
            match what {
                "magic" | "version" => assert!(matches!(result, Err(CryptoError::BadFormat(_))), "{what}"),
                _ => assert!(matches!(result, Err(CryptoError::AuthenticationFailed)), "{what}: {result:?}"),
            }
        }
    }

    #[test]
    fn truncation_reordering_and_appended_bytes_are_detected() {
        let (key, image) = (DataKey::generate(), ImageId::new());
        let sealed = encrypt(&key, image, "original", &bytes(3 * C + 100));
        let (header, full) = (HEADER_LEN as usize, SEALED_CHUNK_LEN as usize);
        let final_dropped = &sealed[..header + 3 * full];
        assert!(matches!(decrypt(&key, image, "original", final_dropped), Err(CryptoError::Truncated)));
        let cut_inside = &sealed[..sealed.len() - 10];
        assert!(matches!(decrypt(&key, image, "original", cut_inside), Err(CryptoError::AuthenticationFailed)));
        assert!(matches!(decrypt(&key, image, "original", &sealed[..10]), Err(CryptoError::Truncated)));
        let mut swapped = sealed[..header].to_vec();
        swapped.extend_from_slice(&sealed[header + full..header + 2 * full]);
        swapped.extend_from_slice(&sealed[header..header + full]);
        swapped.extend_from_slice(&sealed[header + 2 * full..]);
        assert!(matches!(decrypt(&key, image, "original", &swapped), Err(CryptoError::AuthenticationFailed)));
        let mut dropped_middle = sealed[..header + full].to_vec();
        dropped_middle.extend_from_slice(&sealed[header + 2 * full..]);
        assert!(matches!(decrypt(&key, image, "original", &dropped_middle), Err(CryptoError::AuthenticationFailed)));
        let mut appended = sealed.clone();
        appended.extend_from_slice(b"more");
        assert!(matches!(decrypt(&key, image, "original", &appended), Err(CryptoError::AuthenticationFailed)));
        // An empty file's only chunk is its final one: dropping it is noticed too.
        let empty = encrypt(&key, image, "original", b"");
        assert!(matches!(decrypt(&key, image, "original", &empty[..header]), Err(CryptoError::Truncated)));
    }

    #[test]
    fn a_file_opens_only_for_its_image_variant_and_key() {
        let (key, image) = (DataKey::generate(), ImageId::new());
        let sealed = encrypt(&key, image, "original", b"bytes of a photo");
        for (key, image, variant) in
            [(&key, image, "small"), (&key, ImageId::new(), "original"), (&DataKey::generate(), image, "original")]
        {
            assert!(matches!(decrypt(key, image, variant, &sealed), Err(CryptoError::AuthenticationFailed)));
        }
    }

    #[test]
    fn a_range_decrypts_from_a_middle_chunk() {
        let (key, image) = (DataKey::generate(), ImageId::new());
        let len = 4 * C + 1234;
        let plain = bytes(len);
        let sealed = encrypt(&key, image, "original", &plain);
        let header = StreamHeader::parse(&sealed).unwrap();
        let ranges = [
            (0, 1),
            (C as u64 + 5, 2 * C as u64 + 9),
            (2 * C as u64, 3 * C as u64),
            (3 * C as u64 - 1, len as u64),
            (len as u64 - 1, len as u64),
            (0, len as u64),
        ];
        for (start, end) in ranges {
            let plan = ciphertext_range(len as u64, start..end).unwrap();
            assert_eq!(plan.ciphertext.start, chunk_offset(start / CHUNK_LEN));
            let fetched = &sealed[plan.ciphertext.start as usize..plan.ciphertext.end as usize];
            let mut reader = DecryptingReader::from_chunk(fetched, &header, plan.first_chunk, &key, image, "original");
            io::copy(&mut (&mut reader).take(plan.skip), &mut io::sink()).unwrap();
            let mut got = Vec::new();
            reader.take(end - start).read_to_end(&mut got).unwrap();
            assert_eq!(got, plain[start as usize..end as usize], "range {start}..{end}");
        }
        // A chunk read as if it sat elsewhere does not authenticate.
        let plan = ciphertext_range(len as u64, C as u64..C as u64 + 1).unwrap();
        let fetched = &sealed[plan.ciphertext.start as usize..plan.ciphertext.end as usize];
        let mut reader = DecryptingReader::from_chunk(fetched, &header, 2, &key, image, "original");
        let error = reader.read(&mut [0u8; 8]).unwrap_err();
        assert!(matches!(CryptoError::in_io_error(&error), Some(CryptoError::AuthenticationFailed)));
        assert_eq!(ciphertext_range(len as u64, 5..5), None);
        assert_eq!(ciphertext_range(len as u64, 0..len as u64 + 1), None);
    }
}
