// ZoKrates through zokrates-js, for Missive (missive/toolchain/zk.py): one JSON request on stdin,
// one JSON answer on stdout.  Run as a separate process: zokrates-js is GPL-3.0, Missive is MIT.
//   {"op": "setup", "source": "def main(...) ..."}  -> {program, abi, pk (base64), vk, constraints}
//   {"op": "prove", "program", "abi", "pk" (base64), "args": ["3", "4"]} -> {proof, output}
import { pathToFileURL } from "url";
import path from "path";

const chunks = [];
for await (const chunk of process.stdin) chunks.push(chunk);
const request = JSON.parse(Buffer.concat(chunks).toString("utf8"));
const where = path.join(process.env.MISSIVE_ZK_DIR_RESOLVED, "node_modules", "zokrates-js", "index-node.js");
const { initialize } = await import(pathToFileURL(where).href);
const zk = await initialize();
const b64 = (bytes) => Buffer.from(bytes).toString("base64");
const bytes = (text) => new Uint8Array(Buffer.from(text, "base64"));
let answer;
try {
  if (request.op === "setup") {
    const artifacts = zk.compile(request.source);
    const keys = zk.setup(artifacts.program);
    answer = { program: b64(artifacts.program), abi: artifacts.abi, pk: b64(keys.pk), vk: keys.vk,
               constraints: artifacts.constraintCount };
  } else if (request.op === "prove") {
    const program = bytes(request.program);
    const { witness, output } = zk.computeWitness({ program, abi: request.abi }, request.args);
    answer = { proof: zk.generateProof(program, witness, bytes(request.pk)), output };
  } else {
    throw new Error(`no operation ${request.op}`);
  }
} catch (error) {
  answer = { error: String(error && error.message ? error.message : error) };
}
process.stdout.write(JSON.stringify(answer));
process.exit(0);
