//! HS256/384/512 (RFC 7518 §3.2): HMAC (RFC 2104) over SHA-2, compared in constant time.
//! The same in both builds: HMAC is cheap in Rust and no host offers it.

use sha2::{Digest, Sha256, Sha384, Sha512};

use super::jwks::Alg;

/// HMAC of `message` under `key` with hash `D` of block size `block` bytes.
fn hmac<D: Digest>(block: usize, key: &[u8], message: &[u8]) -> Vec<u8> {
    let mut k0 = if key.len() > block { D::digest(key).to_vec() } else { key.to_vec() };
    k0.resize(block, 0);
    let pad = |b: u8| k0.iter().map(|k| k ^ b).collect::<Vec<u8>>();
    let mut inner = D::new();
    inner.update(pad(0x36));
    inner.update(message);
    let inner = inner.finalize();
    let mut outer = D::new();
    outer.update(pad(0x5c));
    outer.update(inner);
    outer.finalize().to_vec()
}

/// The MAC of `message` for an HS* algorithm (`None` for any other).
pub fn mac(alg: Alg, key: &[u8], message: &[u8]) -> Option<Vec<u8>> {
    match alg {
        Alg::HS256 => Some(hmac::<Sha256>(64, key, message)),
        Alg::HS384 => Some(hmac::<Sha384>(128, key, message)),
        Alg::HS512 => Some(hmac::<Sha512>(128, key, message)),
        _ => None,
    }
}

/// True when `signature` is the MAC of `message` (no early exit on the first difference).
pub fn verify(alg: Alg, key: &[u8], message: &[u8], signature: &[u8]) -> bool {
    let Some(expected) = mac(alg, key, message) else { return false };
    expected.len() == signature.len() && expected.iter().zip(signature).fold(0u8, |acc, (a, b)| acc | (a ^ b)) == 0
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn hex(s: &str) -> Vec<u8> {
        (0..s.len()).step_by(2).map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap()).collect()
    }

    /// RFC 4231 test cases 1, 2 and 6 (a key longer than the block size).
    #[test]
    fn rfc4231_vectors() {
        let cases: [(Vec<u8>, &[u8], [&str; 3]); 3] = [
            (
                vec![0x0b; 20],
                b"Hi There",
                [
                    "b0344c61d8db38535ca8afceaf0bf12b881dc200c9833da726e9376c2e32cff7",
                    "afd03944d84895626b0825f4ab46907f15f9dadbe4101ec682aa034c7cebc59cfaea9ea9076ede7f4af152e8b2fa9cb6",
                    "87aa7cdea5ef619d4ff0b4241a1d6cb02379f4e2ce4ec2787ad0b30545e17cdedaa833b7d6b8a702038b274eaea3f4e4be9d914eeb61f1702e696c203a126854",
                ],
            ),
            (
                b"Jefe".to_vec(),
                b"what do ya want for nothing?",
                [
                    "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843",
                    "af45d2e376484031617f78d2b58a6b1b9c7ef464f5a01b47e42ec3736322445e8e2240ca5e69e2c78b3239ecfab21649",
                    "164b7a7bfcf819e2e395fbe73b56e0a387bd64222e831fd610270cd7ea2505549758bf75c05a994a6d034f65f8f0e6fdcaeab1a34d4a6b4b636e070a38bce737",
                ],
            ),
            (
                vec![0xaa; 131],
                b"Test Using Larger Than Block-Size Key - Hash Key First",
                [
                    "60e431591ee0b67f0d8a26aacbf5b77f8e0bc6213728c5140546040f0ee37f54",
                    "4ece084485813e9088d2c63a041bc5b44f9ef1012a2b588f3cd11f05033ac4c60c2ef6ab4030fe8296248df163f44952",
                    "80b24263c7c1a3ebb71493c1dd7be8b49b46d1f41b4aeec1121b013783f8f3526b56d037e05f2598bd0fd2215d6a1e5295e64f73f63f0aec8b915a985d786598",
                ],
            ),
        ];
        for (key, msg, want) in cases {
            for (alg, w) in [Alg::HS256, Alg::HS384, Alg::HS512].into_iter().zip(want) {
                let m = mac(alg, &key, msg).unwrap();
                assert_eq!(m, hex(w), "{alg:?}");
                assert!(verify(alg, &key, msg, &m));
                let mut bad = m.clone();
                bad[0] ^= 1;
                assert!(!verify(alg, &key, msg, &bad));
                assert!(!verify(alg, &key, msg, &m[..m.len() - 1]), "a truncated MAC is refused");
            }
        }
        assert!(!verify(Alg::RS256, b"k", b"m", b""));
    }
}
