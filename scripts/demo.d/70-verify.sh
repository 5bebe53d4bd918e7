# verify: judge a recorded NixOS firewall (tailnet-only SSH, smtp-only egress) without root,
# then the same policy against a firewall that still has SSH open to the internet.
say "verify: firewall checks on a recorded nft ruleset (no root)"
VROOT="$SANDBOX/verify-root"
mkdir -p "$VROOT/etc/clawdlets"
echo '{"sshExposure":"tailnet","tailnet":"tailscale","egress":"smtp-only"}' > "$VROOT/etc/clawdlets/verify.json"
FIX="agent/tests/fixtures/verify/nixos-tailnet.nft.json"
"$BIN" verify --root "$VROOT" --ruleset "$FIX" --only ssh.firewall ssh.tailnet-only egress.smtp tailnet.udp
say "verify: the same policy against a firewall with 22 open to everyone (exit 1 expected)"
# The same firewall with the tailscale0 condition removed from the SSH rule (openFirewall = true).
"$BIN" verify --root "$VROOT" --ruleset "agent/tests/fixtures/verify/nixos-open-ssh.nft.json" --only ssh.firewall ssh.tailnet-only && exit 1 || echo "exit code $? (a check failed, as it should)"
