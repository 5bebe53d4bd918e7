# Minimal "hardware" for evaluating fleet hosts without their real hosts/<name>.nix (disk layout,
# boot loader): enough for `config.system.build.toplevel` to evaluate. Used by the flake check
# `fleet-example`; never deployed.
{ lib, ... }:
{
  boot.loader.grub.device = lib.mkDefault "nodev";
  fileSystems."/" = lib.mkDefault { device = "/dev/disk/by-label/nixos"; fsType = "ext4"; };
  system.stateVersion = lib.mkDefault "25.11";
}
