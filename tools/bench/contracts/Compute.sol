// SPDX-License-Identifier: MIT
pragma solidity ^0.8.20;

/// Long computations inside one call, for the VM benchmark (tools/bench/vm.py).
/// Compiled with solc 0.8.28 (optimizer on, 200 runs, evm cancun); the runtime
/// code is kept in compute_sol.hex beside this file so the benchmark does not
/// need a Solidity compiler.
contract Compute {
    /// Points of a w-by-h grid over [-2, 1] x [-1.5, 1.5] that stay bounded for
    /// maxIter steps of z := z^2 + c: signed fixed-point arithmetic (SDIV, SLT,
    /// SGT, signed multiplication), as in a ray tracer.
    function mandelbrot(uint256 w, uint256 h, uint256 maxIter) external pure returns (uint256 inside) {
        int256 one = 1e18;
        for (uint256 py = 0; py < h; py++) {
            int256 ci = -15e17 + int256(py) * 3e18 / int256(h);
            for (uint256 px = 0; px < w; px++) {
                int256 cr = -2e18 + int256(px) * 3e18 / int256(w);
                int256 zr = 0;
                int256 zi = 0;
                uint256 k = 0;
                while (k < maxIter) {
                    int256 zr2 = zr * zr / one;
                    int256 zi2 = zi * zi / one;
                    if (zr2 + zi2 > 4e18) break;
                    zi = 2 * zr * zi / one + ci;
                    zr = zr2 - zi2 + cr;
                    k++;
                }
                if (k == maxIter) inside++;
            }
        }
    }

    /// Primes below n by the sieve of Eratosthenes over a memory array.
    function sieve(uint256 n) external pure returns (uint256 count) {
        bool[] memory composite = new bool[](n);
        for (uint256 i = 2; i < n; i++) {
            if (!composite[i]) {
                count++;
                for (uint256 j = i * i; j < n; j += i) composite[j] = true;
            }
        }
    }

    /// Naive recursive Fibonacci: internal calls and returns (dynamic jumps).
    function fib(uint256 n) external pure returns (uint256) {
        return _fib(n);
    }

    function _fib(uint256 n) internal pure returns (uint256) {
        return n < 2 ? n : _fib(n - 1) + _fib(n - 2);
    }
}
