# Evaluation test (no VM, no build): real NixOS configurations with insecure combinations must
# fail with the assertion that names the fix, and a sane configuration must have none. Needs
# nixpkgs; run with `nix build .#checks.<system>.assertions`.
{ pkgs, self, nixpkgs }:
let
  inherit (pkgs) lib;
  system = pkgs.stdenv.hostPlatform.system;
  key = lib.fileContents ./fixtures/test-ssh-ed25519.pub;
  failedAssertions = module:
    let
      cfg = (nixpkgs.lib.nixosSystem {
        modules = [
          self.nixosModules.default
          ./hardware-stub.nix
          { nixpkgs.hostPlatform = system; clawdlets.enable = true; clawdlets.package = self.packages.${system}.default; }
          module
        ];
      }).config;
    in
    map (a: a.message) (lib.filter (a: !a.assertion) cfg.assertions);

  ok = { clawdlets.sshExposure.admin.authorizedKeys = [ key ]; };
  cases = {
    sane = { module = ok; expect = null; };
    tailnet-ssh-without-tailscale = {
      module = lib.recursiveUpdate ok { clawdlets.sshExposure.mode = "tailnet"; clawdlets.tailnet.mode = "none"; };
      expect = "lock yourself out";
    };
    public-without-ack = { module = lib.recursiveUpdate ok { clawdlets.sshExposure.mode = "public"; }; expect = "acknowledgePublic = true"; };
    bot-outside-clf-bots = {
      module = { lib, ... }: ok // { clawdlets.bots.x = { }; users.users.bot-x.extraGroups = lib.mkForce [ ]; };
      expect = "which is not in group \"clf-bots\"";
    };
    proxy-without-allowlist = { module = lib.recursiveUpdate ok { clawdlets.egress.mode = "proxy-allowlist"; }; expect = "empty allowlist"; };
    ssh-port-in-nixos-firewall = { module = ok // { networking.firewall.allowedTCPPorts = [ 22 ]; }; expect = "bypass"; };
    no-authorized-keys = { module = { }; expect = "nobody could log in"; };
    user-secret-not-root = {
      module = ok // { clawdlets.secrets.pw = { neededForUsers = true; owner = "nobody"; }; };
      expect = "must be owned by root";
    };
  };

  results = lib.mapAttrs (name: c:
    let
      msgs = failedAssertions c.module;
      pass = if c.expect == null then msgs == [ ] else lib.any (m: lib.hasInfix c.expect m) msgs;
    in
    if pass then "ok"
    else throw "assertion case ${name}: expected ${if c.expect == null then "no failures" else "a failure containing '${c.expect}'"}, got ${builtins.toJSON msgs}")
    cases;
in
pkgs.writeText "clawdlets-assertions" (builtins.toJSON results)
