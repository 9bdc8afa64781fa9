//! Archives as lists of members (tar and ar read here, zip in `zip`), and how two such
//! lists differ: members on one side only, order, and per member its type, link, mode,
//! owner, mtime, other header fields and content (compared recursively).

use std::borrow::Cow;
use std::collections::HashMap;
use std::io::{self, Write};

use super::{
    Ctx, DriftKind, Field, Format, MAX_ANALYSED_BYTES, MAX_MEMBER_DRIFTS, Variation, content, util,
};
use crate::formats::{FormatError, ar, deflate, tar};

/// A member's data as stored.
#[derive(Debug)]
pub(super) enum Data<'d> {
    /// Stored as is.
    Raw(&'d [u8]),
    /// Raw deflate (zip method 8).
    Deflate(&'d [u8]),
    /// Compressed with a method this report does not inflate (or encrypted).
    Opaque(&'d [u8]),
}

impl<'d> Data<'d> {
    fn stored(&self) -> &'d [u8] {
        match *self {
            Self::Raw(d) | Self::Deflate(d) | Self::Opaque(d) => d,
        }
    }

    /// The member's content; opaque data stands for itself.
    fn content(&self) -> Result<Cow<'d, [u8]>, String> {
        match *self {
            Self::Raw(d) | Self::Opaque(d) => Ok(Cow::Borrowed(d)),
            Self::Deflate(d) => {
                let mut out = Capped::default();
                deflate::inflate(d, 0, d.len() as u64, u64::MAX, &mut out).map_err(reason)?;
                Ok(Cow::Owned(out.0))
            }
        }
    }
}

/// Inflated bytes, refused past [`MAX_ANALYSED_BYTES`].
#[derive(Debug, Default)]
pub(super) struct Capped(pub(super) Vec<u8>);

impl Write for Capped {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if (self.0.len() + buf.len()) as u64 > MAX_ANALYSED_BYTES {
            return Err(io::Error::other(format!(
                "inflates to more than {} MiB",
                MAX_ANALYSED_BYTES >> 20
            )));
        }
        self.0.extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Why a reader gave up, as the report says it.
pub(super) fn reason(e: FormatError) -> String {
    match e {
        FormatError::Read(e) => format!("cannot read: {e}"),
        FormatError::Write(e) => format!("cannot inflate: {e}"),
        FormatError::Corrupt(d) | FormatError::Unsupported(d) => d,
    }
}

/// One member of an archive, its fields as they are shown.
#[derive(Debug)]
pub(super) struct Member<'d> {
    pub(super) name: String,
    pub(super) kind: &'static str,
    pub(super) mtime: Option<String>,
    pub(super) mode: Option<u32>,
    pub(super) owner: Option<String>,
    pub(super) link: Option<String>,
    /// Other header fields, by name.
    pub(super) header: Vec<(&'static str, String)>,
    /// How the data is compressed, where the format says.
    pub(super) compression: Option<String>,
    pub(super) data: Data<'d>,
}

impl<'d> Member<'d> {
    pub(super) fn new(name: String, kind: &'static str, data: Data<'d>) -> Self {
        Self {
            name,
            kind,
            mtime: None,
            mode: None,
            owner: None,
            link: None,
            header: Vec::new(),
            compression: None,
            data,
        }
    }

    fn describe(&self) -> String {
        format!("{}, {} bytes stored", self.kind, self.data.stored().len())
    }
}

/// Collects an archive's drift entries, counting those past the bound.
#[derive(Debug)]
pub(super) struct Drifts {
    format: Format,
    pub(super) out: Vec<DriftKind>,
    omitted: usize,
    /// Members whose field got a hint, per field: past [`HINTS_PER_FIELD`], counted.
    hinted: HashMap<Field, usize>,
}

/// Member hints per field and archive; the rest are summed up in one.
const HINTS_PER_FIELD: usize = 3;

impl Drifts {
    pub(super) fn new(format: Format) -> Self {
        Self {
            format,
            out: Vec::new(),
            omitted: 0,
            hinted: HashMap::new(),
        }
    }

    pub(super) fn push(
        &mut self,
        member: &str,
        field: Field,
        a: Option<String>,
        b: Option<String>,
        detail: Option<DriftKind>,
    ) {
        if self.out.len() >= MAX_MEMBER_DRIFTS {
            self.omitted += 1;
            return;
        }
        self.out.push(DriftKind::Archive {
            format: self.format,
            member: member.to_owned(),
            field,
            a,
            b,
            detail: detail.map(Box::new),
        });
    }

    pub(super) fn finish(mut self, ctx: &mut Ctx<'_>, label: &str) -> Vec<DriftKind> {
        let mut more: Vec<(Field, usize)> = self
            .hinted
            .iter()
            .filter(|&(_, &n)| n > HINTS_PER_FIELD)
            .map(|(&f, &n)| (f, n - HINTS_PER_FIELD))
            .collect();
        more.sort_by_key(|&(f, _)| f as u8);
        for (field, n) in more {
            let variation = match field {
                Field::Mode => Variation::Umask,
                Field::Owner => Variation::User,
                _ => Variation::Time,
            };
            ctx.hint(
                label,
                variation,
                format!(
                    "and {n} more members whose {} differs",
                    super::render::field_name(field)
                ),
            );
        }
        if self.omitted > 0 {
            self.out.push(DriftKind::Omitted {
                count: self.omitted,
                what: "more member differences".to_owned(),
            });
        }
        self.out
    }

    /// A field that differs, with its hint.
    pub(super) fn field(
        &mut self,
        ctx: &mut Ctx<'_>,
        at: &str,
        member: &str,
        field: Field,
        a: String,
        b: String,
    ) {
        let hint = match field {
            Field::Mtime => Some((
                Variation::Time,
                format!(
                    "member mtime {a} in a, {b} in b: file times reach the archive (clamp them, e.g. to SOURCE_DATE_EPOCH)"
                ),
            )),
            Field::Mode => Some((
                Variation::Umask,
                format!(
                    "member mode {a} in a, {b} in b: the umask at the time the files were written"
                ),
            )),
            Field::Owner => Some((
                Variation::User,
                format!("member owner {a} in a, {b} in b: the user the step ran as"),
            )),
            _ => None,
        };
        if let Some((variation, message)) = hint {
            let n = self.hinted.entry(field).or_insert(0);
            *n += 1;
            if *n <= HINTS_PER_FIELD {
                ctx.hint(at, variation, message);
            }
        }
        self.push(member, field, Some(a), Some(b), None);
    }
}

/// A member's key: its name, with the occurrence number for repeated names.
fn keys(members: &[Member<'_>]) -> Vec<String> {
    let mut seen: HashMap<&str, usize> = HashMap::new();
    members
        .iter()
        .map(|m| {
            let n = seen.entry(m.name.as_str()).or_insert(0);
            *n += 1;
            if *n == 1 {
                m.name.clone()
            } else {
                format!("{} (#{n})", m.name)
            }
        })
        .collect()
}

/// A few names around the first place two orders part.
fn around(names: &[&String], at: usize) -> String {
    let start = at.saturating_sub(1);
    let mut s = names[start..names.len().min(start + 5)]
        .iter()
        .map(|n| n.as_str())
        .collect::<Vec<_>>()
        .join(", ");
    if start > 0 {
        s = format!("…, {s}");
    }
    if names.len() > start + 5 {
        s.push_str(", …");
    }
    s
}

/// How two member lists differ, into `d`.
pub(super) fn compare_members(
    ctx: &mut Ctx<'_>,
    label: &str,
    d: &mut Drifts,
    a: &[Member<'_>],
    b: &[Member<'_>],
    depth: usize,
) {
    let (ka, kb) = (keys(a), keys(b));
    let ia: HashMap<&String, usize> = ka.iter().enumerate().map(|(i, k)| (k, i)).collect();
    let ib: HashMap<&String, usize> = kb.iter().enumerate().map(|(i, k)| (k, i)).collect();
    for (i, k) in ka.iter().enumerate() {
        if !ib.contains_key(k) {
            d.push(k, Field::OnlyInA, Some(a[i].describe()), None, None);
        }
    }
    for (i, k) in kb.iter().enumerate() {
        if !ia.contains_key(k) {
            d.push(k, Field::OnlyInB, None, Some(b[i].describe()), None);
        }
    }
    let common_a: Vec<&String> = ka.iter().filter(|k| ib.contains_key(k)).collect();
    let common_b: Vec<&String> = kb.iter().filter(|k| ia.contains_key(k)).collect();
    if let Some(at) = common_a.iter().zip(&common_b).position(|(x, y)| x != y) {
        let (oa, ob) = (around(&common_a, at), around(&common_b, at));
        ctx.hint(
            label,
            Variation::Order,
            format!(
                "members in another order from position {at}: the archiver took the files in the directory's order (sort them)"
            ),
        );
        d.push("", Field::Order, Some(oa), Some(ob), None);
    }
    for k in common_a {
        let (ma, mb) = (&a[ia[k]], &b[ib[k]]);
        let at = format!("{label}!{k}");
        if ma.kind != mb.kind {
            d.field(
                ctx,
                &at,
                k,
                Field::Type,
                ma.kind.to_owned(),
                mb.kind.to_owned(),
            );
        }
        if ma.link != mb.link {
            let show = |l: &Option<String>| l.clone().unwrap_or_else(|| "(none)".to_owned());
            d.field(ctx, &at, k, Field::Link, show(&ma.link), show(&mb.link));
        }
        if ma.mode != mb.mode {
            let show =
                |m: Option<u32>| m.map_or_else(|| "(none)".to_owned(), |m| format!("{m:04o}"));
            d.field(ctx, &at, k, Field::Mode, show(ma.mode), show(mb.mode));
        }
        if ma.owner != mb.owner {
            let show = |o: &Option<String>| o.clone().unwrap_or_else(|| "(none)".to_owned());
            d.field(ctx, &at, k, Field::Owner, show(&ma.owner), show(&mb.owner));
        }
        if ma.mtime != mb.mtime {
            let show = |o: &Option<String>| o.clone().unwrap_or_else(|| "(none)".to_owned());
            d.field(ctx, &at, k, Field::Mtime, show(&ma.mtime), show(&mb.mtime));
        }
        for (name, va) in &ma.header {
            let vb = mb.header.iter().find(|(n, _)| n == name).map(|(_, v)| v);
            if vb != Some(va) {
                let vb = vb.cloned().unwrap_or_else(|| "(none)".to_owned());
                d.field(
                    ctx,
                    &at,
                    k,
                    Field::Header,
                    format!("{name} {va}"),
                    format!("{name} {vb}"),
                );
            }
        }
        for (name, vb) in &mb.header {
            if !ma.header.iter().any(|(n, _)| n == name) {
                d.field(
                    ctx,
                    &at,
                    k,
                    Field::Header,
                    format!("{name} (none)"),
                    format!("{name} {vb}"),
                );
            }
        }
        member_content(ctx, &at, d, k, ma, mb, depth);
    }
}

fn member_content(
    ctx: &mut Ctx<'_>,
    at: &str,
    d: &mut Drifts,
    k: &str,
    ma: &Member<'_>,
    mb: &Member<'_>,
    depth: usize,
) {
    let same_method = ma.compression == mb.compression
        && std::mem::discriminant(&ma.data) == std::mem::discriminant(&mb.data);
    if same_method && ma.data.stored() == mb.data.stored() {
        return;
    }
    match (ma.data.content(), mb.data.content()) {
        (Ok(ca), Ok(cb)) => {
            if ca == cb {
                let show = |m: &Member<'_>| {
                    format!(
                        "{}, {} bytes",
                        m.compression.as_deref().unwrap_or("stored"),
                        m.data.stored().len()
                    )
                };
                d.push(k, Field::Compression, Some(show(ma)), Some(show(mb)), None);
            } else {
                for kind in content::compare_bytes(ctx, at, &ca, &cb, depth + 1) {
                    d.push(k, Field::Content, None, None, Some(kind));
                }
            }
        }
        (ra, rb) => {
            let reason = [("a", ra.err()), ("b", rb.err())]
                .into_iter()
                .filter_map(|(side, e)| e.map(|e| format!("{side}: {e}")))
                .collect::<Vec<_>>()
                .join("; ");
            d.push(
                k,
                Field::Content,
                None,
                None,
                Some(DriftKind::Unreadable {
                    format: d.format,
                    reason,
                }),
            );
            let kind = content::binary(ctx, at, ma.data.stored(), mb.data.stored(), true);
            d.push(k, Field::Content, None, None, Some(kind));
        }
    }
}

// ---- tar ----

/// A tar archive: "ustar" at 257, or (old tar) a first header with a name and a valid
/// checksum.
pub(super) fn looks_like_tar(d: &[u8]) -> bool {
    let Some(h) = tar::Header::at_start(d) else {
        return false;
    };
    h.is_ustar() || (h.0[0] != 0 && h.0[..100].contains(&0) && h.checksum_ok())
}

fn tar_kind(flag: u8) -> &'static str {
    match flag {
        b'0' | b'7' => "file",
        b'1' => "hard link",
        b'2' => "symlink",
        b'3' => "character device",
        b'4' => "block device",
        b'5' => "directory",
        b'6' => "fifo",
        b'g' => "pax global header",
        _ => "other",
    }
}

fn lossy(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn pax_time(v: &str) -> String {
    let secs: Option<i64> = v.split('.').next().and_then(|s| s.parse().ok());
    match secs {
        Some(s) if v.contains('.') => format!("{v} ({})", util::utc(s)),
        Some(s) => util::fmt_unix(s),
        None => v.to_owned(),
    }
}

pub(super) fn read_tar(d: &[u8]) -> Result<Vec<Member<'_>>, String> {
    let mut out = Vec::new();
    let mut globals = 0;
    for entry in tar::entries(d) {
        let e = entry.map_err(reason)?;
        let h = &e.header;
        let data = util::slice(d, e.data, e.size, "tar member data")?;
        let mut name = lossy(&e.path);
        let show = |v: Option<u64>| v.map_or("?".to_owned(), |v| v.to_string());
        let mut mtime = h.mtime().map_or_else(
            || "(unreadable)".to_owned(),
            |t| util::fmt_unix(i64::try_from(t).unwrap_or(i64::MAX)),
        );
        let (mut uid, mut gid) = (show(h.uid()), show(h.gid()));
        let (mut uname, mut gname) = if h.is_ustar() {
            (lossy(h.uname()), lossy(h.gname()))
        } else {
            (String::new(), String::new())
        };
        let mut times = Vec::new();
        for (k, v) in &e.pax {
            let v = lossy(v);
            match k.as_slice() {
                b"mtime" => mtime = pax_time(&v),
                b"atime" | b"ctime" => times.push(format!("{} {}", lossy(k), pax_time(&v))),
                b"uid" => uid = v,
                b"gid" => gid = v,
                b"uname" => uname = v,
                b"gname" => gname = v,
                _ => {}
            }
        }
        if !times.is_empty() {
            mtime = format!("{mtime}; {}", times.join("; "));
        }
        if e.typeflag == b'g' {
            globals += 1;
            name = format!("(pax global header #{globals})");
        }
        let mut m = Member::new(name, tar_kind(e.typeflag), Data::Raw(data));
        m.mode = h.mode().map(|v| u32::try_from(v & 0o7777).unwrap_or(0));
        m.owner = Some(format!("uid {uid} gid {gid} ({uname}/{gname})"));
        m.mtime = Some(mtime);
        m.link = (!e.link.is_empty()).then(|| lossy(&e.link));
        if matches!(e.typeflag, b'3' | b'4') {
            m.header.push((
                "device",
                format!(
                    "{}:{}",
                    h.dev_major().unwrap_or(0),
                    h.dev_minor().unwrap_or(0)
                ),
            ));
        }
        out.push(m);
    }
    Ok(out)
}

pub(super) fn compare_tar(
    ctx: &mut Ctx<'_>,
    label: &str,
    a: &[u8],
    b: &[u8],
    depth: usize,
) -> Result<Vec<DriftKind>, String> {
    compare_listed(ctx, label, a, b, depth, Format::Tar, read_tar)
}

/// Two archives of a format whose members [`compare_members`] compares, read by `read`.
fn compare_listed<'d>(
    ctx: &mut Ctx<'_>,
    label: &str,
    a: &'d [u8],
    b: &'d [u8],
    depth: usize,
    format: Format,
    read: fn(&'d [u8]) -> Result<Vec<Member<'d>>, String>,
) -> Result<Vec<DriftKind>, String> {
    let ma = read(a).map_err(|e| format!("a: {e}"))?;
    let mb = read(b).map_err(|e| format!("b: {e}"))?;
    let mut d = Drifts::new(format);
    compare_members(ctx, label, &mut d, &ma, &mb, depth);
    Ok(d.finish(ctx, label))
}

// ---- ar ----

pub(super) fn read_ar(d: &[u8]) -> Result<Vec<Member<'_>>, String> {
    let mut out = Vec::new();
    let mut names: &[u8] = &[];
    for member in ar::members(d) {
        let m = member.map_err(reason)?;
        let at = m.offset;
        let h = &m.header;
        let mut data = util::slice(d, m.data, m.size, "ar member data")?;
        let name = match h.name_kind() {
            ar::Name::Symbols => "(symbol table)".to_owned(),
            ar::Name::LongNames => {
                names = data;
                "(long names)".to_owned()
            }
            ar::Name::Long(off) => lossy(
                ar::long_name(names, off)
                    .ok_or_else(|| format!("ar long name offset {off} out of range"))?,
            ),
            ar::Name::Bsd(len) => {
                let n = data.get(..len).ok_or_else(|| {
                    format!("ar BSD name of {len} bytes at offset {at:#x} runs past its member")
                })?;
                data = &data[len..];
                util::cstr(n)
            }
            ar::Name::Plain(n) => lossy(n.strip_suffix(b"/").unwrap_or(n)),
        };
        let field = |v: Option<u64>, what: &str| {
            v.ok_or_else(|| format!("bad ar {what} at offset {at:#x}"))
        };
        let mut m = Member::new(name, "file", Data::Raw(data));
        m.mtime = Some(util::fmt_unix(
            i64::try_from(field(h.mtime(), "mtime")?).unwrap_or(i64::MAX),
        ));
        m.owner = Some(format!(
            "uid {} gid {}",
            field(h.uid(), "uid")?,
            field(h.gid(), "gid")?
        ));
        m.mode = Some(u32::try_from(field(h.mode(), "mode")? & 0o7777).unwrap_or(0));
        out.push(m);
    }
    Ok(out)
}

pub(super) fn compare_ar(
    ctx: &mut Ctx<'_>,
    label: &str,
    a: &[u8],
    b: &[u8],
    depth: usize,
) -> Result<Vec<DriftKind>, String> {
    compare_listed(ctx, label, a, b, depth, Format::Ar, read_ar)
}

#[cfg(test)]
pub(super) mod tests {
    use super::super::CompareOptions;
    use super::*;

    /// A ustar header block and its data, padded.
    pub(in super::super) fn tar_entry(
        name: &str,
        data: &[u8],
        mtime: u64,
        mode: u32,
        uid: u32,
    ) -> Vec<u8> {
        let mut h = [0u8; 512];
        h[..name.len()].copy_from_slice(name.as_bytes());
        let put = |h: &mut [u8; 512], at: usize, width: usize, v: u64| {
            let s = format!("{v:0w$o}\0", w = width - 1);
            h[at..at + width].copy_from_slice(s.as_bytes());
        };
        put(&mut h, 100, 8, u64::from(mode));
        put(&mut h, 108, 8, u64::from(uid));
        put(&mut h, 116, 8, 0);
        put(&mut h, 124, 12, data.len() as u64);
        put(&mut h, 136, 12, mtime);
        h[156] = b'0';
        h[257..263].copy_from_slice(b"ustar\0");
        h[263..265].copy_from_slice(b"00");
        h[265..269].copy_from_slice(b"user");
        h[148..156].copy_from_slice(b"        ");
        let sum: u32 = h.iter().map(|&c| u32::from(c)).sum();
        h[148..156].copy_from_slice(format!("{sum:06o}\0 ").as_bytes());
        let mut out = h.to_vec();
        out.extend_from_slice(data);
        out.resize(out.len().div_ceil(512) * 512, 0);
        out
    }

    pub(in super::super) fn tar(entries: &[Vec<u8>]) -> Vec<u8> {
        let mut out: Vec<u8> = entries.concat();
        out.extend_from_slice(&[0u8; 1024]);
        out
    }

    fn fields(kinds: &[DriftKind]) -> Vec<(String, Field)> {
        kinds
            .iter()
            .filter_map(|k| match k {
                DriftKind::Archive { member, field, .. } => Some((member.clone(), *field)),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn tar_fields() {
        let o = CompareOptions::default();
        let mut ctx = Ctx::new(&o);
        let a = tar(&[
            tar_entry("x.txt", b"one\n", 1000, 0o644, 0),
            tar_entry("y.txt", b"two\n", 1000, 0o644, 0),
        ]);
        let b = tar(&[
            tar_entry("y.txt", b"two\n", 1000, 0o664, 0),
            tar_entry("x.txt", b"one\n", 2000, 0o644, 1000),
            tar_entry("z.txt", b"", 1000, 0o644, 0),
        ]);
        let kinds = compare_tar(&mut ctx, "t.tar", &a, &b, 0).unwrap();
        assert_eq!(
            fields(&kinds),
            [
                ("z.txt".to_owned(), Field::OnlyInB),
                (String::new(), Field::Order),
                ("x.txt".to_owned(), Field::Owner),
                ("x.txt".to_owned(), Field::Mtime),
                ("y.txt".to_owned(), Field::Mode),
            ]
        );
        let vars: Vec<Variation> = ctx.hints.iter().map(|h| h.variation).collect();
        assert_eq!(
            vars,
            [
                Variation::Order,
                Variation::User,
                Variation::Time,
                Variation::Umask
            ]
        );
    }

    #[test]
    fn member_hints_are_summed_up_past_three() {
        let o = CompareOptions::default();
        let mut ctx = Ctx::new(&o);
        let names = ["a", "b", "c", "d", "e", "f"];
        let a = tar(&names.map(|n| tar_entry(n, b"x", 100, 0o644, 0)));
        let b = tar(&names.map(|n| tar_entry(n, b"x", 200, 0o644, 0)));
        let kinds = compare_tar(&mut ctx, "t.tar", &a, &b, 0).unwrap();
        assert_eq!(kinds.len(), 6);
        let hints: Vec<&str> = ctx.hints.iter().map(|h| h.path.as_str()).collect();
        assert_eq!(hints, ["t.tar!a", "t.tar!b", "t.tar!c", "t.tar"]);
        assert_eq!(
            ctx.hints[3].message,
            "and 3 more members whose mtime differs"
        );
    }

    #[test]
    fn tar_content_recurses() {
        let o = CompareOptions::default();
        let mut ctx = Ctx::new(&o);
        let inner_a = tar(&[tar_entry("in.txt", b"a\nb\nc\n", 5, 0o644, 0)]);
        let inner_b = tar(&[tar_entry("in.txt", b"a\nB\nc\n", 5, 0o644, 0)]);
        let a = tar(&[tar_entry("inner.tar", &inner_a, 1, 0o644, 0)]);
        let b = tar(&[tar_entry("inner.tar", &inner_b, 1, 0o644, 0)]);
        let kinds = compare_tar(&mut ctx, "t.tar", &a, &b, 0).unwrap();
        let [
            DriftKind::Archive {
                member,
                field: Field::Content,
                detail: Some(detail),
                ..
            },
        ] = kinds.as_slice()
        else {
            panic!("{kinds:?}");
        };
        assert_eq!(member, "inner.tar");
        let DriftKind::Archive {
            member,
            detail: Some(text),
            ..
        } = detail.as_ref()
        else {
            panic!("{detail:?}");
        };
        assert_eq!(member, "in.txt");
        let DriftKind::Text { diff, .. } = text.as_ref() else {
            panic!("{text:?}");
        };
        assert!(diff.contains("-b\n+B\n"), "{diff}");
    }

    #[test]
    fn corrupt_tar_is_an_error_not_a_panic() {
        let mut t = tar(&[tar_entry("x", b"data", 1, 0o644, 0)]);
        assert!(read_tar(&t).is_ok());
        t[0] = b'y';
        assert!(read_tar(&t).unwrap_err().contains("checksum"));
        let t = tar(&[tar_entry("x", &[7u8; 2000], 1, 0o644, 0)]);
        assert!(read_tar(&t[..1000]).unwrap_err().contains("past the end"));
    }

    #[test]
    fn ar_members() {
        let entry = |name: &str, mtime: u64, data: &[u8]| {
            let mut h = format!(
                "{name:<16}{mtime:<12}{:<6}{:<6}{:<8}{:<10}`\n",
                0,
                0,
                "100644",
                data.len()
            )
            .into_bytes();
            h.extend_from_slice(data);
            if data.len() % 2 == 1 {
                h.push(b'\n');
            }
            h
        };
        let a = [
            ar::MAGIC.to_vec(),
            entry("a.o/", 10, b"abc"),
            entry("b.o/", 10, b"xy"),
        ]
        .concat();
        let b = [
            ar::MAGIC.to_vec(),
            entry("a.o/", 20, b"abc"),
            entry("b.o/", 10, b"xy"),
        ]
        .concat();
        let ms = read_ar(&a).unwrap();
        assert_eq!(
            ms.iter().map(|m| m.name.as_str()).collect::<Vec<_>>(),
            ["a.o", "b.o"]
        );
        let o = CompareOptions::default();
        let mut ctx = Ctx::new(&o);
        let kinds = compare_ar(&mut ctx, "l.a", &a, &b, 0).unwrap();
        assert_eq!(fields(&kinds), [("a.o".to_owned(), Field::Mtime)]);
        assert!(read_ar(&a[..30]).is_err());
    }
}
