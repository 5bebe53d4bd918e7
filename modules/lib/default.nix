# The pure (builtins-only) helpers behind the clawdlets NixOS modules. Evaluable without nixpkgs:
#   nix-instantiate --eval --strict --json -E '(import ./modules/lib).firewall.render { }'
{
  firewall = import ./firewall.nix;
  policy = import ./policy.nix;
  manifest = import ./manifest.nix;
  fleet = import ./fleet.nix;
  verify = import ./verify.nix;
}
