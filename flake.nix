{
  description = "calibench: can a TensorRT INT8 calibration cache made on one GPU be reused on another?";

  inputs = {
    nixpkgs.url = "github:NixOS/nixpkgs/nixos-24.11";
    flake-utils.url = "github:numtide/flake-utils";
  };

  outputs = { self, nixpkgs, flake-utils }:
    flake-utils.lib.eachDefaultSystem (system:
      let
        pkgs = import nixpkgs { inherit system; };
        fixturePython = pkgs.python3.withPackages (ps: [ ps.numpy ps.scikit-learn ps.onnx ps.onnxruntime ]);
      in {
        packages.default = pkgs.rustPlatform.buildRustPackage {
          pname = "calibench";
          version = "0.1.0";
          src = ./.;
          cargoLock.lockFile = ./Cargo.lock;
        };
        devShells.default = pkgs.mkShell {
          packages = [ pkgs.cargo pkgs.rustc pkgs.clippy pkgs.rustfmt pkgs.git fixturePython ];
        };
        checks.default = self.packages.${system}.default;
      });
}
