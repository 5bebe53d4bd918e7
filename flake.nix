{
  description = "clawdlets: a Rust host agent and NixOS modules that keep a fleet of bot servers secure";

  # One input. nixpkgs is pinned by flake.lock to a nixos-25.11 revision (see docs/nixos.md).
  inputs.nixpkgs.url = "github:NixOS/nixpkgs/nixos-25.11";

  outputs =
    { self, nixpkgs }:
    let
      inherit (nixpkgs) lib;
      systems = [ "x86_64-linux" "aarch64-linux" ];
      forAllSystems = f: lib.genAttrs systems (system: f nixpkgs.legacyPackages.${system});

      # The pure (builtins-only) helpers: firewall rules, policy checks, manifest, fleet.
      clawdletsLib = import ./modules/lib;

      # nixosConfigurations for every host of a fleet file. Exposed as `lib.mkFleet` so a
      # downstream flake (the operator's fleet repository) can use its own fleet/clawdlets.json:
      #   nixosConfigurations = clawdlets.lib.mkFleet { fleetFile = ./fleet/clawdlets.json; hostModules = ./hosts; };
      # `hostModules` is an optional directory holding `<host>.nix` (hardware, disks) per host.
      mkFleet =
        {
          fleetFile,
          hostModules ? null,
          extraModules ? [ ],
          nixpkgsInput ? nixpkgs,
        }:
        let
          fleet = builtins.fromJSON (builtins.readFile fleetFile);
          hostModule =
            name:
            let
              p = hostModules + "/${name}.nix";
            in
            lib.optional (hostModules != null && builtins.pathExists p) p;
          mkHost =
            name:
            nixpkgsInput.lib.nixosSystem {
              modules = [
                self.nixosModules.default
                (clawdletsLib.fleet.hostSettings fleet name)
                { nixpkgs.hostPlatform = clawdletsLib.fleet.system fleet name; }
              ]
              ++ hostModule name
              ++ extraModules;
            };
        in
        lib.genAttrs (clawdletsLib.fleet.hostNames fleet) mkHost;

      fleetFile = ./fleet/clawdlets.json;
    in
    {
      lib = clawdletsLib // {
        inherit mkFleet;
      };

      packages = forAllSystems (pkgs: rec {
        clawdlets = pkgs.callPackage ./nix/package.nix { };
        default = clawdlets;
      });

      overlays.default = final: _prev: { clawdlets = final.callPackage ./nix/package.nix { }; };

      nixosModules = {
        default = ./modules;
        core = ./modules/core.nix;
        secrets = ./modules/secrets.nix;
        orchestrator = ./modules/orchestrator.nix;
        ssh-exposure = ./modules/ssh-exposure.nix;
        tailnet = ./modules/tailnet.nix;
        egress = ./modules/egress.nix;
        firewall = ./modules/firewall.nix;
        verify = ./modules/verify.nix;
        bots = ./modules/bots.nix;
      };

      # Hosts of this repository's fleet file (written by `clawdlets` on the operator machine).
      # Hardware and disk settings per host go in hosts/<name>.nix.
      nixosConfigurations = lib.optionalAttrs (builtins.pathExists fleetFile) (mkFleet {
        inherit fleetFile;
        hostModules = ./hosts;
      });

      # NixOS VM tests, one feature each (need KVM; `nix flake check` or `nix build .#checks.<system>.<name>`),
      # plus evaluation of the example fleet and the pure-Nix unit tests.
      checks = forAllSystems (
        pkgs:
        import ./tests/vm {
          inherit pkgs self;
        }
        // {
          package = self.packages.${pkgs.stdenv.hostPlatform.system}.default;
          assertions = import ./tests/vm/assertions.nix { inherit pkgs self nixpkgs; };
          nix-unit =
            let
              result = import ./tests/nix/run.nix { nixpkgsLib = "${nixpkgs}/lib"; };
            in
            assert lib.assertMsg (result.failed == [ ])
              "pure-Nix unit tests failed: ${builtins.toJSON result.failed}";
            pkgs.writeText "clawdlets-nix-unit" "${toString result.passed} cases passed\n";
          # Every example host evaluates (assertions included) to a system derivation.
          fleet-example = pkgs.writeText "clawdlets-fleet-example" (
            lib.concatMapStrings (c: builtins.unsafeDiscardStringContext c.config.system.build.toplevel.drvPath + "\n") (
              builtins.attrValues (mkFleet {
                fleetFile = ./tests/fleet/clawdlets.json;
                extraModules = [ ./tests/vm/hardware-stub.nix ];
              })
            )
          );
        }
      );

      devShells = forAllSystems (pkgs: {
        default = pkgs.mkShell {
          inputsFrom = [ self.packages.${pkgs.stdenv.hostPlatform.system}.default ];
          packages = with pkgs; [
            cargo
            clippy
            rustfmt
            rust-analyzer
            sops
            age
            nftables
            nixos-anywhere
            nixos-rebuild
          ];
        };
      });

      formatter = forAllSystems (pkgs: pkgs.nixfmt);
    };
}
