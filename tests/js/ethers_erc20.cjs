// ethers v6 against `missive rpc`: deploy an ERC20, transfer, read balances and logs, a failing
// transfer's revert reason, the message tree, and a Transfer log pushed over a WebSocket subscription.
// Usage: node ethers_erc20.cjs URL ARTIFACT.json   (ALICE_KEY in the environment: a funded key)
// Prints one JSON line of what it saw; any failure exits 1 with one line saying what.
"use strict";
const { ethers } = require("ethers");

async function main() {
  const [url, artifactPath] = process.argv.slice(2);
  const { abi, bytecode } = JSON.parse(require("fs").readFileSync(artifactPath, "utf8"));
  const provider = new ethers.JsonRpcProvider(url, undefined, { staticNetwork: true, batchMaxCount: 1 });
  provider.pollingInterval = 50;
  const wallet = new ethers.Wallet(process.env.ALICE_KEY, provider);
  const chainId = (await provider.getNetwork()).chainId;

  const factory = new ethers.ContractFactory(abi, bytecode, wallet);
  const token = await factory.deploy("Token", "TOK", 10n ** 24n);
  await token.waitForDeployment();
  const address = await token.getAddress();

  const ws = new ethers.WebSocketProvider(url.replace("http://", "ws://"));
  const pushed = new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error("no Transfer log pushed over the WebSocket in 30 s")), 30000);
    new ethers.Contract(address, abi, ws).on("Transfer", (from, to, value, event) => {
      clearTimeout(timer);
      resolve({ to, value: value.toString(), tx: event.log.transactionHash });
    });
  });
  await new Promise((r) => setTimeout(r, 300)); // the subscription is made before the transfer

  const bob = ethers.Wallet.createRandom().address;
  const tx = await token.transfer(bob, 12345n);
  const receipt = await tx.wait();
  const parsed = receipt.logs.map((log) => token.interface.parseLog(log)).filter((e) => e && e.name === "Transfer");
  const filtered = await token.queryFilter(token.filters.Transfer(null, bob), 0);
  let reason = null;
  try {
    await token.connect(new ethers.VoidSigner(bob, provider)).transfer.staticCall(wallet.address, 10n ** 6n);
  } catch (err) {
    reason = err.reason ?? err.shortMessage ?? String(err);
  }
  const tree = await provider.send("missive_waitForTree", [receipt.hash, 10]);
  const event = await pushed;
  ws.destroy();
  console.log(JSON.stringify({
    chainId: chainId.toString(), token: address, status: receipt.status, transfer: receipt.hash,
    logged: parsed.map((e) => [e.args[1], e.args[2].toString()]),
    filtered: filtered.map((e) => [e.args[1], e.args[2].toString(), e.transactionHash]),
    bob, bobBalance: (await token.balanceOf(bob)).toString(),
    aliceBalance: (await token.balanceOf(wallet.address)).toString(),
    reason, treeDone: tree.done, pushed: event,
  }));
}

main().then(() => process.exit(0), (err) => {
  console.error(`ethers script failed: ${err && err.shortMessage ? err.shortMessage : err}`);
  process.exit(1);
});
