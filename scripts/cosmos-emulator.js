#!/usr/bin/env node
// Local Cosmos DB emulator for agent-fleet: @vercel/cosmosdb-server with a bug fixed.
//
// Usage: node scripts/cosmos-emulator.js [-p|--port PORT] [--host HOST] [--no-ssl]
//        (the same options as the package's own `cosmosdb-server` CLI)
//
// Why a wrapper: reading a missing document with a partition key makes the server's
// read handler dereference `undefined` (it indexes the document before checking that it
// exists) and answer 500 "Cannot read properties of undefined (reading '<pk path>')".
// Real Cosmos DB answers 404 NotFound, which the SDK maps to CosmosResourceNotFoundError;
// the app relies on that. Replace, patch and delete check for a missing document before
// touching it, so they answer 404 already and are left alone.
//
// Second bug: a conditional patch's filter predicate ("from c where c.spentUsd < 5") is
// lower-cased before it is evaluated, so any camelCase property or mixed-case string literal
// never matches and every such patch answers 412. The predicate is handed over as a complete
// query instead, a form the server evaluates verbatim.
"use strict";

const NOT_FOUND = {
  code: "NotFound",
  message: "Entity with the specified id does not exist in the system.",
};

// Only the dereference-of-a-missing-document failure becomes a 404; any other error still
// surfaces as the server's 500 so that genuine bugs stay visible.
function isMissingDocumentError(err) {
  return (
    err instanceof TypeError &&
    /Cannot read propert(y|ies) of undefined/.test(String(err.message))
  );
}

function patchHandler(modulePath) {
  const mod = require(modulePath);
  const original = mod.default;
  if (typeof original !== "function" || original.__fleetPatched) {
    return;
  }
  const wrapped = async (account, req, res, params) => {
    try {
      return await original(account, req, res, params);
    } catch (err) {
      if (!isMissingDocumentError(err)) {
        throw err;
      }
      res.statusCode = 404;
      return { ...NOT_FOUND };
    }
  };
  wrapped.__fleetPatched = true;
  mod.default = wrapped;
}

const PREDICATE = /^\s*from\s+([A-Za-z_][A-Za-z0-9_]*)\s+where\s+([\s\S]+)$/i;

function partitionScope(collection, alias, header) {
  const definition = collection.read() || {};
  const paths = (definition.partitionKey && definition.partitionKey.paths) || [];
  if (paths.length !== 1 || header === undefined || header === null) {
    return "";
  }
  let value;
  try {
    value = JSON.parse(header);
  } catch (err) {
    return "";
  }
  if (Array.isArray(value)) {
    value = value[0];
  }
  if (typeof value !== "string" && typeof value !== "number" && typeof value !== "boolean") {
    return "";
  }
  const field = paths[0]
    .split("/")
    .filter(Boolean)
    .map((part) => `[${JSON.stringify(part)}]`)
    .join("");
  return ` AND ${alias}${field} = ${JSON.stringify(value)}`;
}

function patchConditionalPatch() {
  const ops = require("@vercel/cosmosdb-server/lib/handler/_patch-operations");
  const original = ops.patchOperation;
  if (typeof original !== "function" || original.__fleetPatched) {
    return;
  }
  const wrapped = (collection, input) => {
    const match = typeof input.condition === "string" ? PREDICATE.exec(input.condition) : null;
    if (!match) {
      return original(collection, input);
    }
    const [, alias, clause] = match;
    // Third bug: the server checks the condition with a query over the whole container
    // filtered by id only, so a document with the same id in *another* partition can
    // satisfy it (every product's budget document is "budget"). Scope it to this
    // document's partition, as Cosmos DB does.
    const scope = partitionScope(collection, alias, input.partitionKey);
    // Contains "select", so the original takes it as a full query and keeps its case.
    const condition = `SELECT * FROM ${alias} WHERE ${alias}.id = @id${scope} AND (${clause})`;
    return original(collection, { ...input, condition });
  };
  wrapped.__fleetPatched = true;
  ops.patchOperation = wrapped;
}

// Must run before anything requires lib/routes: it copies each handler's `.default` into
// its routing table when it is loaded, so a later patch would never be called.
patchHandler("@vercel/cosmosdb-server/lib/handler/read-document");
// patch-document looks patchOperation up on the module at each call, but patch it early too.
patchConditionalPatch();

const { createHttpServer, createHttpsServer } = require("@vercel/cosmosdb-server");

function parseArgs(argv) {
  const args = {};
  const rest = argv.slice();
  while (rest.length) {
    const key = rest.shift();
    switch (key) {
      case "-h":
      case "--help":
        args.help = true;
        break;
      case "-p":
      case "--port":
        args.port = parseInt(rest.shift(), 10);
        break;
      case "--host":
        args.hostname = rest.shift();
        break;
      case "--no-ssl":
        args.nossl = true;
        break;
      default:
        break;
    }
  }
  return args;
}

const args = parseArgs(process.argv.slice(2));
if (args.help) {
  console.log(`
Usage: cosmos-emulator [options]

Options:

  -h, --help
  -p, --port
  --no-ssl
  --host
`);
  process.exit(0);
}

// Keep connections open, as Cosmos DB does: the emulator's default (`connection: close` on every
// reply) made every store call open a new TCP connection, a cost the service never has.
const server = (args.nossl ? createHttpServer : createHttpsServer)({ keepAlive: true });
server.on("error", (err) => {
  console.error(`cosmos-emulator: ${err.message}`);
  process.exit(1);
});
server.listen(args.port, args.hostname, () => {
  const { address, family, port } = server.address();
  const hostname = args.hostname || (family === "IPv6" ? `[${address}]` : address);
  console.log(`Ready to accept HTTP${args.nossl ? "" : "S"} connections at ${hostname}:${port}`);
});

// A supervisor stops us with SIGTERM/SIGINT: close the listener so the port is freed at once.
for (const signal of ["SIGTERM", "SIGINT"]) {
  process.on(signal, () => {
    server.close();
    process.exit(0);
  });
}
