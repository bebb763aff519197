{
  description = "fleetgate: keep a fleet of NixOS machines up to date without ever leaving one unbootable";

  inputs.nixpkgs.url = "github:NixOS/nixpkgs/nixos-unstable";

  outputs = { self, nixpkgs }:
    let
      systems = [ "x86_64-linux" "aarch64-linux" ];
      forAllSystems = f: nixpkgs.lib.genAttrs systems (system: f nixpkgs.legacyPackages.${system});
    in
    {
      # `pkgs.fleetgate`, for hosts and CI images.
      overlays.default = final: _prev: {
        fleetgate = final.callPackage ./nix/package.nix { };
      };

      packages = forAllSystems (pkgs: rec {
        fleetgate = pkgs.callPackage ./nix/package.nix { };
        default = fleetgate;
      });

      # services.fleetgate.agent (nix/module.nix), with `pkgs.fleetgate`
      # from this flake's overlay.
      nixosModules.agent = {
        imports = [ ./nix/module.nix ];
        nixpkgs.overlays = [ self.overlays.default ];
      };
      nixosModules.default = self.nixosModules.agent;

      formatter = forAllSystems (pkgs: pkgs.nixpkgs-fmt);
    };
}
