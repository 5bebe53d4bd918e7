//! Detectors for plaintext secret material in text: private key headers, well-known token
//! formats, and high-entropy values assigned to secret-sounding names. Used by `secrets check`
//! on every blob git tracks. Reports line numbers and a description, never the matched text.

use std::sync::OnceLock;

use regex::Regex;

/// One match: 1-based line and what it looks like.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hit {
    pub line: usize,
    pub what: &'static str,
    /// True for private keys (always a finding, even inside secrets/).
    pub private_key: bool,
}

struct Rules {
    private: Vec<(Regex, &'static str)>,
    tokens: Vec<(Regex, &'static str)>,
    assignment: Regex,
}

fn rules() -> &'static Rules {
    static R: OnceLock<Rules> = OnceLock::new();
    R.get_or_init(|| {
        let r = |p: &str| Regex::new(p).expect("static regex");
        Rules {
            private: vec![
                (r(r"-----BEGIN (?:[A-Z0-9]+ )*PRIVATE KEY(?: BLOCK)?-----"), "a private key (PEM/OpenSSH header)"),
                (r(r"AGE-SECRET-KEY-(?:PQ-)?1[0-9A-Z]{20,}"), "an age secret key"),
                (r(r"AGE-PLUGIN-[A-Z0-9-]+-1[0-9A-Z]{20,}"), "an age plugin identity"),
            ],
            tokens: vec![
                (r(r"\bgh[pousr]_[A-Za-z0-9]{36,}"), "a GitHub token"),
                (r(r"\bgithub_pat_[A-Za-z0-9_]{50,}"), "a GitHub fine-grained token"),
                (r(r"\bxox[abposr]-[A-Za-z0-9-]{10,}"), "a Slack token"),
                (r(r"\bsk-(?:ant-|proj-)?[A-Za-z0-9_-]{32,}"), "an OpenAI/Anthropic-style API key"),
                (r(r"\bAIza[0-9A-Za-z_-]{35}"), "a Google API key"),
                (r(r"\b(?:AKIA|ASIA)[0-9A-Z]{16}\b"), "an AWS access key id"),
                (r(r"\btskey-[a-z]+-[A-Za-z0-9]{6,}-[A-Za-z0-9]{10,}"), "a Tailscale auth key"),
                (r(r"\bglpat-[A-Za-z0-9_-]{20,}"), "a GitLab token"),
                (r(r"\b(?:sk|rk)_live_[A-Za-z0-9]{20,}"), "a Stripe live key"),
                (r(r"\b[MNO][A-Za-z0-9_-]{23,27}\.[A-Za-z0-9_-]{6}\.[A-Za-z0-9_-]{27,40}\b"), "a Discord bot token"),
                // `hashedPassword = "$6$..."` in a Nix file: crackable offline once public; keep
                // it in a `password-hash` secret (hashedPasswordFile) instead.
                (r(r"\$(?:1|2[abxy]|5|6|7|y|gy)\$[./0-9A-Za-z=,$]{20,}"), "a crypt(3) password hash (use a password-hash secret)"),
            ],
            assignment: r(
                r#"(?i)[A-Za-z0-9_.-]*(?:token|secret|passw(?:or)?d|passwd|api[_-]?key|private[_-]?key|auth[_-]?key|access[_-]?key|credential)[A-Za-z0-9_.-]*["']?\s*[:=]\s*["']?([A-Za-z0-9+/_.=-]{16,})"#,
            ),
        }
    })
}

/// Shannon entropy in bits per character.
pub fn entropy(s: &str) -> f64 {
    let mut counts = [0usize; 256];
    for b in s.bytes() {
        counts[b as usize] += 1;
    }
    let n = s.len() as f64;
    counts
        .iter()
        .filter(|c| **c > 0)
        .map(|c| {
            let p = *c as f64 / n;
            -p * p.log2()
        })
        .sum()
}

/// Values that look random but are public by design.
fn is_public_form(v: &str) -> bool {
    v.starts_with("age1")
        || v.starts_with("sha256-")
        || v.starts_with("sha512-")
        || v.starts_with("AAAA")
}

/// Scans `text`; `tokens` enables the token and assignment detectors (off inside secrets/,
/// where sops ciphertext would look random).
pub fn scan(text: &str, tokens: bool) -> Vec<Hit> {
    let r = rules();
    let mut hits = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let n = i + 1;
        if let Some((_, what)) = r.private.iter().find(|(re, _)| re.is_match(line)) {
            hits.push(Hit {
                line: n,
                what,
                private_key: true,
            });
            continue;
        }
        if !tokens {
            continue;
        }
        if let Some((_, what)) = r.tokens.iter().find(|(re, _)| re.is_match(line)) {
            hits.push(Hit {
                line: n,
                what,
                private_key: false,
            });
            continue;
        }
        for c in r.assignment.captures_iter(line) {
            let v = &c[1];
            let classes = [
                v.bytes().any(|b| b.is_ascii_lowercase()),
                v.bytes().any(|b| b.is_ascii_uppercase()),
                v.bytes().any(|b| b.is_ascii_digit()),
            ]
            .iter()
            .filter(|x| **x)
            .count();
            if !is_public_form(v) && v.len() >= 16 && entropy(v) >= 3.5 && classes >= 2 {
                hits.push(Hit {
                    line: n,
                    what: "a high-entropy value assigned to a secret-looking name",
                    private_key: false,
                });
                break;
            }
        }
    }
    hits
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn detects_keys_and_tokens_without_false_positives_on_public_material() {
        assert!(scan("-----BEGIN OPENSSH PRIVATE KEY-----\nabc\n", true)[0].private_key);
        assert!(
            scan(
                "key: AGE-SECRET-KEY-1QQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQ",
                false
            )[0]
            .private_key
        );
        assert_eq!(
            scan("token = ghp_0123456789abcdefghijABCDEFGHIJ0123456789", true)[0].what,
            "a GitHub token"
        );
        assert_eq!(
            scan("DISCORD_TOKEN=\"k3Jq9ZpX2mV7sT4wL8nR5yB1cD6fH0gA\"", true).len(),
            1
        );
        // Public keys, hashes, placeholders and ordinary config do not fire.
        assert!(
            scan(
                "ageRecipient: age1tsgxegc6vaetpdmp68jmtjhafvtr90ysset47eudxx9wu9e73sws7jmwkz",
                true
            )
            .is_empty()
        );
        assert!(scan("\"ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIIkJiflZaSK6q6lOWJmqZdrv58+tV1FnxytDPdmN9XFI a\"", true).is_empty());
        assert!(
            scan(
                "\"narHash\": \"sha256-Xyz0123456789abcdefABCDEF0123456789abcdefgh=\"",
                true
            )
            .is_empty()
        );
        assert!(scan("token: ${DISCORD_BOT_TOKEN}", true).is_empty());
        let nix = r#"users.users.admin.hashedPassword = "$6$8Iw.EN2Ao8Im8Jmb$/exoAbCdEfGhIjKlMnOpQrStUvWxYz0123456789";"#;
        assert_eq!(
            scan(nix, true)[0].what,
            "a crypt(3) password hash (use a password-hash secret)"
        );
        let yes = "hash: $y$j9T$F5Jx5fExrKuPp53xLKQ..1$.3PFyKl9LaVkmGGUtYhoTaXWsmDmJDamIF77y.E0et4";
        assert_eq!(scan(yes, true).len(), 1);
        assert!(scan("cost is $5 per month, $6 with tax", true).is_empty());
        assert!(scan("password_file = /run/secrets/admin_password_hash", true).is_empty());
        assert!(scan("-----BEGIN AGE ENCRYPTED FILE-----", true).is_empty());
        assert!(
            scan(
                "secret: ENC[AES256_GCM,data:abc,iv:def,tag:ghi,type:str]",
                true
            )
            .is_empty()
        );
    }
}
