# The Python test scripts of the NixOS VM tests (tests/vm), rendered with stand-in nodes and pkgs
# so that scripts/check-nix.sh can at least byte-compile them where the VMs cannot run. Needs a
# nixpkgs `lib` directory (tests/vm uses pkgs.lib):
#   nix-instantiate --eval --strict --json tests/nix/vm-scripts.nix --arg nixpkgsLib /path/to/lib
{ nixpkgsLib }:
let
  lib = import nixpkgsLib;
  fake = name: "/nix/store/fake-${name}";
  pkgs = {
    inherit lib;
    stdenv.hostPlatform.system = "x86_64-linux";
    testers.runNixOSTest = t: t;
    socat = fake "socat";
    coreutils = fake "coreutils";
    nmap = fake "nmap";
    curl = fake "curl";
  };
  self = {
    nixosModules.default = { };
    packages.x86_64-linux.default = fake "clawdlets";
  };
  iface = ip: { ipv4.addresses = [ { address = ip; } ]; };
  node = n: {
    networking.interfaces = { eth1 = iface "192.168.1.${n}"; eth2 = iface "192.168.2.${n}"; };
    clawdlets.sops.manifest = fake "manifest.json";
    clawdlets.templates."maren.env".file = fake "template";
  };
  nodes = { server = node "2"; client = node "1"; machine = node "1"; internet = node "3"; };
  script = t: if builtins.isFunction t.testScript then t.testScript { inherit nodes; } else t.testScript;
in
builtins.mapAttrs (_: script) (import ../vm { inherit pkgs self; })
