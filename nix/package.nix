# The clawdlets agent, built from the workspace's Cargo.lock (no vendored hash to keep in sync).
# Only the library and binary tests run here: the integration tests need root, network namespaces
# and real users, which the Nix build sandbox does not provide (CI runs them with scripts/test.sh).
{ lib, rustPlatform }:
let
  root = ../.;
  workspace = builtins.fromTOML (builtins.readFile ../Cargo.toml);
in
rustPlatform.buildRustPackage {
  pname = "clawdlets";
  inherit (workspace.workspace.package) version;

  src = lib.fileset.toSource {
    inherit root;
    fileset = lib.fileset.difference
      (lib.fileset.unions [ ../Cargo.toml ../Cargo.lock ../rustfmt.toml ../agent ])
      (lib.fileset.maybeMissing ../agent/fuzz);
  };

  cargoLock.lockFile = ../Cargo.lock;
  cargoBuildFlags = [ "--package" "clawdlets" ];
  cargoTestFlags = [ "--package" "clawdlets" "--lib" "--bins" ];

  meta = {
    description = "Host agent that keeps a fleet of bot servers secure: SOPS secrets, orchestrator, egress proxy, verify";
    license = lib.licenses.mit;
    mainProgram = "clawdlets";
    platforms = lib.platforms.linux;
  };
}
