# shellcheck shell=bash
# Stage 30: `secrets install` — what activation does on fleet-1, run in the sandbox without root.
# Expects stage 20 to have copied the host's nixos-anywhere extra-files into $SANDBOX/host
# (age key at var/lib/sops-nix/key.txt, one sops file per secret under
# var/lib/clawdlets/secrets/hosts/fleet-1/<secret>.yaml, holding the key <secret>).
HOST_ROOT="$SANDBOX/host"
HOST_SECRETS=/var/lib/clawdlets/secrets/hosts/fleet-1
say "secrets install: decrypt fleet-1's secrets into $HOST_ROOT/run/secrets (sops-nix manifest, --root sandbox)"
if ! ls "$HOST_ROOT$HOST_SECRETS"/*.yaml >/dev/null 2>&1; then
  echo "(skipped: stage 20 did not provide $HOST_ROOT$HOST_SECRETS/*.yaml)"
else
  # The host's users as NixOS would define them; --root looks names up in <root>/etc first.
  mkdir -p "$HOST_ROOT/etc" "$HOST_ROOT/run/nixos"
  [ -e "$HOST_ROOT/etc/passwd" ] || printf 'root:x:0:0::/root:/bin/sh\nbot-maren:x:1501:1500::/var/empty:/sbin/nologin\n' >"$HOST_ROOT/etc/passwd"
  [ -e "$HOST_ROOT/etc/group" ] || printf 'root:x:0:\nkeys:x:96:\nclf-bots:x:1500:bot-maren\n' >"$HOST_ROOT/etc/group"

  # The manifest the NixOS module renders (sops-nix field set); user passwords go to the
  # separate neededForUsers manifest, installed first into /run/secrets-for-users.
  demo_manifest() { # $1 = for-users (true|false)
    local first=1 f name owner mount link
    printf '{"secrets":['
    for f in "$HOST_ROOT$HOST_SECRETS"/*.yaml; do
      name=$(basename "$f" .yaml)
      case "$name" in *password_hash*) [ "$1" = true ] || continue ;; *) [ "$1" = false ] || continue ;; esac
      owner=null
      case "$name" in *_maren) owner='"bot-maren"' ;; esac
      [ $first = 1 ] || printf ','
      first=0
      printf '{"name":"%s","key":"%s","path":"%s/%s","format":"yaml","mode":"0400","owner":%s,"uid":0,"group":null,"gid":0,"sopsFile":"%s/%s.yaml","sopsFileHash":"","restartUnits":%s,"reloadUnits":[],"neededForUsers":%s}' \
        "$name" "$name" "$([ "$1" = true ] && echo /run/secrets-for-users || echo /run/secrets)" "$name" "$owner" "$HOST_SECRETS" "$name" \
        "$([ "$owner" = null ] && echo '[]' || echo '["clawdlets-bot-maren.service"]')" "$1"
    done
    if [ "$1" = true ]; then mount=/run/secrets-for-users.d link=/run/secrets-for-users; else mount=/run/secrets.d link=/run/secrets; fi
    printf '],"templates":[],"secretsMountPoint":"%s","symlinkPath":"%s","keepGenerations":1,"gnupgHome":null,"sshKeyPaths":[],' "$mount" "$link"
    printf '"ageKeyFile":"/var/lib/sops-nix/key.txt","ageSshKeyPaths":[],"useTmpfs":false,"userMode":false,"placeholderBySecretName":{},"logging":{"keyImport":true,"secretChanges":true}}\n'
  }
  demo_manifest true >"$SANDBOX/manifest-for-users.json"
  demo_manifest false >"$SANDBOX/manifest.json"

  echo "\$ clawdlets secrets install --check-mode sopsfile --manifest manifest.json   (build time: no key needed)"
  "$BIN" secrets install --check-mode sopsfile --manifest "$SANDBOX/manifest.json" --root "$HOST_ROOT" && echo "ok"
  echo "\$ clawdlets secrets install --ignore-passwd --manifest manifest-for-users.json --root host"
  "$BIN" secrets install --ignore-passwd --manifest "$SANDBOX/manifest-for-users.json" --root "$HOST_ROOT"
  echo "\$ clawdlets secrets install --manifest manifest.json --root host"
  "$BIN" secrets install --manifest "$SANDBOX/manifest.json" --root "$HOST_ROOT"
  echo "installed tree (names and modes only; not root, so files keep the caller's owner):"
  for top in run/secrets-for-users run/secrets; do
    [ -L "$HOST_ROOT/$top" ] || continue
    echo "  /$top -> $(readlink "$HOST_ROOT/$top" | sed "s|^$HOST_ROOT||")"
    (cd "$HOST_ROOT/$top/" && find . -mindepth 1 -printf '    %M  %p\n' | sort -k2)
  done
  echo "\$ clawdlets secrets install --manifest manifest.json --root host --json   (again: nothing changed)"
  "$BIN" secrets install --manifest "$SANDBOX/manifest.json" --root "$HOST_ROOT" --json |
    grep -E '"(mode|secrets|generation|previousGeneration|changed|restart)"' | sed 's/^ */  /'
fi
