//! The little DER (ITU-T X.690) Portcullis needs to hand keys and signatures to Envoy's
//! `verify_signature` foreign function, which takes a SubjectPublicKeyInfo (RFC 5280 §4.1.2.7)
//! and, for ECDSA, an `ECDSA-Sig-Value` (RFC 3279 §2.2.3), whereas JOSE gives `n`/`e`,
//! `x`/`y` (RFC 7518 §6) and a raw `R‖S` signature (RFC 7518 §3.4). Also the protobuf wire
//! format of the foreign function's argument and result messages.

const OID_RSA_ENCRYPTION: &[u8] = &[0x06, 0x09, 0x2A, 0x86, 0x48, 0x86, 0xF7, 0x0D, 0x01, 0x01, 0x01];
const OID_EC_PUBLIC_KEY: &[u8] = &[0x06, 0x07, 0x2A, 0x86, 0x48, 0xCE, 0x3D, 0x02, 0x01];
const OID_P256: &[u8] = &[0x06, 0x08, 0x2A, 0x86, 0x48, 0xCE, 0x3D, 0x03, 0x01, 0x07];
const OID_P384: &[u8] = &[0x06, 0x05, 0x2B, 0x81, 0x04, 0x00, 0x22];

fn push_len(out: &mut Vec<u8>, len: usize) {
    if len < 0x80 {
        out.push(len as u8);
    } else {
        let bytes = (len as u64).to_be_bytes();
        let skip = bytes.iter().take_while(|b| **b == 0).count();
        out.push(0x80 | (8 - skip) as u8);
        out.extend_from_slice(&bytes[skip..]);
    }
}

fn tlv(tag: u8, content: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(content.len() + 6);
    out.push(tag);
    push_len(&mut out, content.len());
    out.extend_from_slice(content);
    out
}

/// A positive INTEGER from big-endian magnitude bytes (minimal, with a 0x00 pad when the
/// high bit is set).
fn integer(magnitude: &[u8]) -> Vec<u8> {
    let trimmed: &[u8] = {
        let skip = magnitude.iter().take_while(|b| **b == 0).count();
        &magnitude[skip..]
    };
    let mut content = Vec::with_capacity(trimmed.len() + 1);
    if trimmed.is_empty() || trimmed[0] & 0x80 != 0 {
        content.push(0);
    }
    content.extend_from_slice(trimmed);
    tlv(0x02, &content)
}

fn bit_string(content: &[u8]) -> Vec<u8> {
    let mut c = Vec::with_capacity(content.len() + 1);
    c.push(0); // no unused bits
    c.extend_from_slice(content);
    tlv(0x03, &c)
}

/// SubjectPublicKeyInfo for an RSA key from its modulus and exponent.
pub fn rsa_spki(n: &[u8], e: &[u8]) -> Vec<u8> {
    let mut alg = OID_RSA_ENCRYPTION.to_vec();
    alg.extend_from_slice(&[0x05, 0x00]);
    let mut rsa_key = integer(n);
    rsa_key.extend_from_slice(&integer(e));
    let mut spki = tlv(0x30, &alg);
    spki.extend_from_slice(&bit_string(&tlv(0x30, &rsa_key)));
    tlv(0x30, &spki)
}

/// Named curves Portcullis verifies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Curve {
    P256,
    P384,
}

impl Curve {
    /// Size in bytes of one coordinate (and of R or S).
    pub fn coordinate_len(self) -> usize {
        match self {
            Curve::P256 => 32,
            Curve::P384 => 48,
        }
    }
}

/// SubjectPublicKeyInfo for an EC key from its SEC1 uncompressed point `04‖x‖y`.
pub fn ec_spki(curve: Curve, sec1_point: &[u8]) -> Vec<u8> {
    let mut alg = OID_EC_PUBLIC_KEY.to_vec();
    alg.extend_from_slice(match curve {
        Curve::P256 => OID_P256,
        Curve::P384 => OID_P384,
    });
    let mut spki = tlv(0x30, &alg);
    spki.extend_from_slice(&bit_string(sec1_point));
    tlv(0x30, &spki)
}

/// Converts a JWS ECDSA signature (`R‖S`, each exactly the curve's size) to DER.
/// `None` when the length is wrong for the curve.
pub fn ecdsa_raw_to_der(curve: Curve, raw: &[u8]) -> Option<Vec<u8>> {
    let n = curve.coordinate_len();
    if raw.len() != 2 * n {
        return None;
    }
    let mut seq = integer(&raw[..n]);
    seq.extend_from_slice(&integer(&raw[n..]));
    Some(tlv(0x30, &seq))
}

/// Converts a DER `ECDSA-Sig-Value` to the JWS `R‖S` form (for signatures made by the host).
pub fn ecdsa_der_to_raw(curve: Curve, der: &[u8]) -> Option<Vec<u8>> {
    let n = curve.coordinate_len();
    let (tag, body, rest) = read_tlv(der)?;
    if tag != 0x30 || !rest.is_empty() {
        return None;
    }
    let (t1, r, rest) = read_tlv(body)?;
    let (t2, s, rest) = read_tlv(rest)?;
    if t1 != 0x02 || t2 != 0x02 || !rest.is_empty() {
        return None;
    }
    let mut out = Vec::with_capacity(2 * n);
    for v in [r, s] {
        let skip = v.iter().take_while(|b| **b == 0).count();
        let v = &v[skip..];
        if v.len() > n {
            return None;
        }
        out.extend(std::iter::repeat_n(0u8, n - v.len()));
        out.extend_from_slice(v);
    }
    Some(out)
}

const OID_ED25519: &[u8] = &[0x06, 0x03, 0x2B, 0x65, 0x70];

/// The public half of a PKCS#8 private key (RFC 5208 / 5958), as far as Portcullis publishes
/// it in its own JWKS.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Pkcs8Public {
    /// RSA (`RSAPrivateKey`, RFC 8017 A.1.2): the modulus and public exponent, big-endian
    /// magnitudes without leading zeros.
    Rsa { n: Vec<u8>, e: Vec<u8> },
    /// EC (`ECPrivateKey`, RFC 5915) on P-256 or P-384: the SEC1 public point when the key
    /// carries it (OpenSSL, Go and most tools write it; it is optional).
    Ec { curve: Curve, point: Option<Vec<u8>> },
    /// Ed25519 (RFC 8410).
    Ed25519,
}

fn magnitude(v: &[u8]) -> Vec<u8> {
    v[v.iter().take_while(|b| **b == 0).count()..].to_vec()
}

/// Reads the public half of a DER PKCS#8 private key; `None` for anything else.
pub fn pkcs8_public(der: &[u8]) -> Option<Pkcs8Public> {
    let (tag, body, rest) = read_tlv(der)?;
    if tag != 0x30 || !rest.is_empty() {
        return None;
    }
    let (t_version, version, body) = read_tlv(body)?;
    let (t_alg, alg, body) = read_tlv(body)?;
    let (t_key, key, _) = read_tlv(body)?;
    if t_version != 0x02 || !matches!(version, [0] | [1]) || t_alg != 0x30 || t_key != 0x04 {
        return None;
    }
    if alg.starts_with(OID_RSA_ENCRYPTION) {
        let (tag, fields, _) = read_tlv(key)?;
        let (t0, _version, fields) = read_tlv(fields)?;
        let (t1, n, fields) = read_tlv(fields)?;
        let (t2, e, _) = read_tlv(fields)?;
        if tag != 0x30 || t0 != 0x02 || t1 != 0x02 || t2 != 0x02 {
            return None;
        }
        return Some(Pkcs8Public::Rsa { n: magnitude(n), e: magnitude(e) });
    }
    if let Some(params) = alg.strip_prefix(OID_EC_PUBLIC_KEY) {
        let curve = match params {
            p if p == OID_P256 => Curve::P256,
            p if p == OID_P384 => Curve::P384,
            _ => return None,
        };
        let (tag, fields, _) = read_tlv(key)?;
        let (t0, version, mut fields) = read_tlv(fields)?;
        let (t1, _secret, more) = read_tlv(fields)?;
        if tag != 0x30 || t0 != 0x02 || version != [1] || t1 != 0x04 {
            return None;
        }
        fields = more;
        let mut point = None;
        while !fields.is_empty() {
            let (t, inner, more) = read_tlv(fields)?;
            fields = more;
            if t == 0xA1 {
                // [1] EXPLICIT BIT STRING: no unused bits, then `04‖x‖y`.
                let (t_bits, bits, _) = read_tlv(inner)?;
                let sec1 = bits.strip_prefix(&[0])?;
                if t_bits != 0x03 || sec1.len() != 1 + 2 * curve.coordinate_len() || sec1.first() != Some(&4) {
                    return None;
                }
                point = Some(sec1.to_vec());
            }
        }
        return Some(Pkcs8Public::Ec { curve, point });
    }
    (alg == OID_ED25519).then_some(Pkcs8Public::Ed25519)
}

fn read_tlv(input: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let tag = *input.first()?;
    let first = *input.get(1)?;
    let (len, header) = if first < 0x80 {
        (first as usize, 2)
    } else {
        let count = (first & 0x7f) as usize;
        if count == 0 || count > 4 {
            return None;
        }
        let mut len = 0usize;
        for i in 0..count {
            len = (len << 8) | *input.get(2 + i)? as usize;
        }
        (len, 2 + count)
    };
    let end = header.checked_add(len)?;
    let body = input.get(header..end)?;
    Some((tag, body, &input[end..]))
}

/// Protobuf wire format: a length-delimited field.
pub fn pb_bytes(out: &mut Vec<u8>, field: u32, value: &[u8]) {
    pb_varint(out, u64::from(field << 3 | 2));
    pb_varint(out, value.len() as u64);
    out.extend_from_slice(value);
}

/// Protobuf wire format: a varint (without a key).
pub fn pb_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn pb_read_varint(input: &[u8]) -> Option<(u64, &[u8])> {
    let mut v: u64 = 0;
    for (i, b) in input.iter().enumerate().take(10) {
        v |= u64::from(b & 0x7f) << (7 * i);
        if b & 0x80 == 0 {
            return Some((v, &input[i + 1..]));
        }
    }
    None
}

/// Iterates the fields of a protobuf message: (field number, varint value or bytes).
pub fn pb_fields(mut input: &[u8]) -> Option<Vec<(u32, PbValue<'_>)>> {
    let mut out = Vec::new();
    while !input.is_empty() {
        let (key, rest) = pb_read_varint(input)?;
        let field = u32::try_from(key >> 3).ok()?;
        match key & 7 {
            0 => {
                let (v, rest) = pb_read_varint(rest)?;
                out.push((field, PbValue::Varint(v)));
                input = rest;
            }
            2 => {
                let (len, rest) = pb_read_varint(rest)?;
                let len = usize::try_from(len).ok()?;
                let bytes = rest.get(..len)?;
                out.push((field, PbValue::Bytes(bytes)));
                input = &rest[len..];
            }
            _ => return None,
        }
    }
    Some(out)
}

/// A decoded protobuf field value.
#[derive(Debug, PartialEq, Eq)]
pub enum PbValue<'a> {
    Varint(u64),
    Bytes(&'a [u8]),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn integer_minimal() {
        assert_eq!(integer(&[0x00, 0x01]), vec![0x02, 0x01, 0x01]);
        assert_eq!(integer(&[0x80]), vec![0x02, 0x02, 0x00, 0x80]);
        assert_eq!(integer(&[]), vec![0x02, 0x01, 0x00]);
    }

    #[test]
    fn long_lengths() {
        let big = vec![0x11u8; 300];
        let t = tlv(0x04, &big);
        assert_eq!(&t[..4], &[0x04, 0x82, 0x01, 0x2c]);
        let (tag, body, rest) = read_tlv(&t).unwrap();
        assert_eq!((tag, body.len(), rest.len()), (0x04, 300, 0));
    }

    #[test]
    fn ecdsa_round_trip() {
        let mut raw = vec![0u8; 64];
        raw[0] = 0x80; // R with high bit: needs a pad byte
        raw[63] = 0x05; // S small: leading zeros trimmed
        let der = ecdsa_raw_to_der(Curve::P256, &raw).unwrap();
        assert_eq!(ecdsa_der_to_raw(Curve::P256, &der).unwrap(), raw);
        assert!(ecdsa_raw_to_der(Curve::P256, &raw[..63]).is_none());
        assert!(ecdsa_raw_to_der(Curve::P384, &raw).is_none());
        assert!(ecdsa_der_to_raw(Curve::P256, &der[..der.len() - 1]).is_none());
    }

    #[test]
    fn protobuf_round_trip() {
        let mut m = Vec::new();
        pb_bytes(&mut m, 1, b"sha256");
        pb_bytes(&mut m, 4, &[7u8; 200]);
        m.extend_from_slice(&[0x28, 0x01]); // field 5 varint 1
        let f = pb_fields(&m).unwrap();
        assert_eq!(f[0], (1, PbValue::Bytes(b"sha256")));
        assert_eq!(f[1].0, 4);
        assert_eq!(f[2], (5, PbValue::Varint(1)));
        assert!(pb_fields(&[0x0a, 0x05, 0x01]).is_none(), "truncated");
        assert!(pb_fields(&[0x0b]).is_none(), "group wire type refused");
    }
}
