//! Shamir secret sharing over GF(2^8) (AES polynomial), compatible with the Vault-derived
//! implementation sops uses: a share is the y bytes followed by one x byte, x = group index + 1.
//! Used to split the data key across key groups. No I/O, no logging.

use rand::RngCore;
use zeroize::Zeroizing;

/// Multiplication in GF(2^8) modulo x^8 + x^4 + x^3 + x + 1, constant time.
fn mul(a: u8, b: u8) -> u8 {
    let mut acc: u8 = 0;
    for i in (0..8).rev() {
        let bit = (b >> i) & 1;
        let a_or_zero = 0u8.wrapping_sub(bit) & a;
        let reduce = 0u8.wrapping_sub(acc >> 7) & 0x1b;
        acc = a_or_zero ^ (reduce ^ acc.wrapping_add(acc));
    }
    acc
}

/// Multiplicative inverse (a^254); 0 maps to 0.
fn inv(a: u8) -> u8 {
    let mut result = 1u8;
    let mut base = a;
    let mut e = 254u32;
    while e > 0 {
        if e & 1 == 1 {
            result = mul(result, base);
        }
        base = mul(base, base);
        e >>= 1;
    }
    result
}

/// Splits `secret` into `parts` shares, any `threshold` of which recombine it.
pub fn split(
    secret: &[u8],
    parts: usize,
    threshold: usize,
) -> Result<Vec<Zeroizing<Vec<u8>>>, String> {
    if parts < threshold {
        return Err("parts cannot be less than threshold".into());
    }
    if parts > 255 || threshold > 255 {
        return Err("parts and threshold cannot exceed 255".into());
    }
    if threshold < 2 {
        return Err("threshold must be at least 2".into());
    }
    if secret.is_empty() {
        return Err("cannot split an empty secret".into());
    }
    let mut out: Vec<Zeroizing<Vec<u8>>> = (0..parts)
        .map(|i| {
            let mut v = vec![0u8; secret.len() + 1];
            v[secret.len()] = (i + 1) as u8;
            Zeroizing::new(v)
        })
        .collect();
    let mut coeffs = Zeroizing::new(vec![0u8; threshold]);
    for (idx, &byte) in secret.iter().enumerate() {
        coeffs[0] = byte;
        rand::rngs::OsRng.fill_bytes(&mut coeffs[1..]);
        for (i, share) in out.iter_mut().enumerate() {
            let x = (i + 1) as u8;
            // Horner's rule from the highest degree down.
            let mut y = 0u8;
            for &c in coeffs.iter().rev() {
                y = mul(y, x) ^ c;
            }
            share[idx] = y;
        }
    }
    Ok(out)
}

/// Recombines shares (at least two, same length, distinct x) into the secret.
pub fn combine(parts: &[Zeroizing<Vec<u8>>]) -> Result<Zeroizing<Vec<u8>>, String> {
    if parts.len() < 2 {
        return Err("less than two parts cannot be used to reconstruct the secret".into());
    }
    let len = parts[0].len();
    if len < 2 {
        return Err("parts must be at least two bytes".into());
    }
    if parts.iter().any(|p| p.len() != len) {
        return Err("all parts must be the same length".into());
    }
    let xs: Vec<u8> = parts.iter().map(|p| p[len - 1]).collect();
    for (i, x) in xs.iter().enumerate() {
        if xs[..i].contains(x) {
            return Err("duplicate part detected".into());
        }
    }
    let mut secret = Zeroizing::new(vec![0u8; len - 1]);
    for (idx, out) in secret.iter_mut().enumerate() {
        // Lagrange interpolation at x = 0.
        let mut result = 0u8;
        for (i, part) in parts.iter().enumerate() {
            let mut basis = 1u8;
            for (j, &xj) in xs.iter().enumerate() {
                if i != j {
                    basis = mul(basis, mul(xj, inv(xs[i] ^ xj)));
                }
            }
            result ^= mul(part[idx], basis);
        }
        *out = result;
    }
    Ok(secret)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn field_inverse() {
        for a in 1..=255u8 {
            assert_eq!(mul(a, inv(a)), 1);
        }
    }

    #[test]
    fn split_combine_any_subset() {
        let secret: Vec<u8> = (0..32).collect();
        let shares = split(&secret, 4, 3).unwrap();
        assert_eq!(shares[2][32], 3);
        let pick = |ix: &[usize]| ix.iter().map(|&i| shares[i].clone()).collect::<Vec<_>>();
        assert_eq!(&combine(&pick(&[0, 1, 2])).unwrap()[..], &secret[..]);
        assert_eq!(&combine(&pick(&[3, 1, 0])).unwrap()[..], &secret[..]);
        assert_eq!(&combine(&pick(&[0, 1, 2, 3])).unwrap()[..], &secret[..]);
        assert_ne!(&combine(&pick(&[0, 1])).unwrap()[..], &secret[..]);
        assert!(combine(&pick(&[0, 0])).is_err());
    }
}
