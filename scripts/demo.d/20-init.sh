# shellcheck shell=bash
# Stage 20: the operator initialises the example host non-interactively, then nixos-anywhere's
# --extra-files copy is simulated into $SANDBOX/host/ (stage 30 installs the secrets from there).
say "secrets init: the example fleet's host fleet-1 (operator machine, no root)"
REPO="$SANDBOX/repo"
mkdir -p "$REPO"
cp -r fleet "$REPO/"
git -C "$REPO" init -q .
# Operator-supplied values come from a throwaway JSON file, never from argv: the bot token
# (`provided`, stored as given) and the admin login password (`password-hash`: only its
# SHA-512-crypt hash is stored, for hashedPasswordFile).
VALUES="$SANDBOX/provided-values.json"
( umask 077; printf '{"secrets": {"discord_token_maren": "demo-discord-token-not-real", "admin_password_hash": "demo-admin-password-not-real"}}\n' > "$VALUES" )
(cd "$REPO" && "$BIN" secrets init --host fleet-1 --yes --from-json "$VALUES" </dev/null)
rm -f "$VALUES"

say "the operator repo: encrypted files are safe to commit, .clawdlets/ is gitignored (no values shown)"
(cd "$REPO" && find fleet secrets .gitignore .clawdlets -printf '%m  %p\n' | sort -k2)
say "a secret file: one top-level key named after the file, value ENC[...]"
head -n 1 "$REPO/secrets/hosts/fleet-1/gateway_token_maren.yaml" | cut -c1-72
say "the admin login password is stored only as its SHA-512-crypt hash (what hashedPasswordFile reads)"
"$BIN" sops decrypt --age-key-file "$REPO/.clawdlets/keys/operators/alice.agekey" \
  --extract '["admin_password_hash"]' "$REPO/secrets/hosts/fleet-1/admin_password_hash.yaml" | cut -c1-24
echo "...  (\$6\$<16-char salt>\$<hash>; the password itself is stored nowhere)"
say "second run is idempotent (nothing to do)"
(cd "$REPO" && "$BIN" secrets init --host fleet-1 --yes </dev/null)
say "secrets check (CI / pre-commit) on the committed tree"
git -C "$REPO" add -A
(cd "$REPO" && "$BIN" secrets check)

say "nixos-anywhere --extra-files .clawdlets/extra-files/fleet-1 (simulated: copied into \$SANDBOX/host/)"
mkdir -p "$SANDBOX/host"
cp -a "$REPO/.clawdlets/extra-files/fleet-1/." "$SANDBOX/host/"
find "$SANDBOX/host" -printf '%m  %P\n' | sort -k2 | sed '/^[0-9]*  $/d'
