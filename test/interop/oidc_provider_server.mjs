// oidc-provider with the client-credentials grant, served over HTTPS on 127.0.0.1 with a
// certificate made at start.
//
//     node oidc_provider_server.mjs --clients FILE --state-dir DIR
//
// FILE is the client table described in common.mjs; DIR receives the certificate, which
// the ready line names as `ca_file`. The token endpoint is /token. A token requested with
// the resource indicator `urn:stampede:interop-api` is a JWT whose `aud` is that resource,
// and it carries only the scopes `api:read` and `api:write`. All other tokens are opaque.

import crypto from 'node:crypto';
import { readFileSync } from 'node:fs';
import https from 'node:https';

import Provider, { errors } from 'oidc-provider';

import {
  RequestLog, closeOnSignal, listenOnLoopback, makeCertificate, parseOptions, printReady,
  readClients, startStatsServer,
} from './common.mjs';

const interopResource = 'urn:stampede:interop-api';
const defaultLifetimeSeconds = 600;

// A process-local store for the provider's artifacts. It replaces the bundled development
// adapter, which prints a warning on every start.
class MemoryAdapter {
  static store = new Map();

  constructor(model) {
    this.model = model;
  }

  key(id) {
    return `${this.model}:${id}`;
  }

  async upsert(id, payload) {
    MemoryAdapter.store.set(this.key(id), payload);
  }

  async find(id) {
    return MemoryAdapter.store.get(this.key(id));
  }

  async findByUserCode() {
    return undefined;
  }

  async findByUid() {
    return undefined;
  }

  async consume(id) {
    const payload = MemoryAdapter.store.get(this.key(id));
    if (payload) {
      payload.consumed = Math.floor(Date.now() / 1000);
    }
  }

  async destroy(id) {
    MemoryAdapter.store.delete(this.key(id));
  }

  async revokeByGrantId() {}
}

function makeConfiguration(clients) {
  const lifetimes = new Map(clients.map((c) => [c.client_id, c.token_lifetime]));
  const signingKey = crypto.generateKeyPairSync('rsa', { modulusLength: 2048 })
    .privateKey.export({ format: 'jwk' });

  return {
    adapter: MemoryAdapter,
    clients: clients.map((c) => ({
      client_id: c.client_id,
      client_secret: c.client_secret,
      grant_types: ['client_credentials'],
      response_types: [],
      redirect_uris: [],
      token_endpoint_auth_method: 'client_secret_basic',
      ...(c.scope ? { scope: c.scope } : {}),
    })),
    cookies: { keys: [crypto.randomBytes(32).toString('base64url')] },
    features: {
      clientCredentials: { enabled: true },
      devInteractions: { enabled: false },
      resourceIndicators: {
        enabled: true,
        defaultResource: (ctx, client, oneOf) => oneOf,
        useGrantedResource: () => false,
        getResourceServerInfo: (ctx, resource) => {
          if (resource !== interopResource) {
            throw new errors.InvalidTarget();
          }
          return {
            scope: 'api:read api:write',
            audience: resource,
            accessTokenFormat: 'jwt',
            jwt: { sign: { alg: 'RS256' } },
          };
        },
      },
    },
    jwks: { keys: [{ ...signingKey, kid: 'interop-rs256', alg: 'RS256', use: 'sig' }] },
    scopes: ['openid', 'offline_access', 'api:read', 'api:write'],
    ttl: {
      ClientCredentials: (ctx, token, client) =>
        lifetimes.get(client.clientId) ?? defaultLifetimeSeconds,
    },
  };
}

async function main() {
  const options = parseOptions(process.argv.slice(2), ['clients', 'state-dir']);
  const clients = readClients(options.clients);
  const { certFile, keyFile } = makeCertificate(options['state-dir']);

  const log = new RequestLog();
  const statsPort = await startStatsServer(log);

  // The issuer names the port, so the provider is created once the server listens.
  const server = https.createServer({ cert: readFileSync(certFile), key: readFileSync(keyFile) });
  const port = await listenOnLoopback(server);
  const provider = new Provider(`https://127.0.0.1:${port}`, makeConfiguration(clients));

  const entries = new WeakMap();
  const recordParameters = (ctx) => {
    const entry = entries.get(ctx.req);
    if (entry) {
      RequestLog.setParameters(entry, ctx.oidc?.body);
    }
  };
  provider.on('grant.success', recordParameters);
  provider.on('grant.error', recordParameters);
  provider.on('server_error', (ctx, error) => {
    process.stderr.write(`oidc-provider server_error: ${error.name}: ${error.message}\n`);
  });

  const handle = provider.callback();
  server.on('request', (req, res) => {
    entries.set(req, log.add(req));
    handle(req, res);
  });
  closeOnSignal([server]);

  printReady({
    token_url: `https://127.0.0.1:${port}/token`,
    stats_url: `http://127.0.0.1:${statsPort}/stats`,
    ca_file: certFile,
  });
}

main().catch((error) => {
  process.stderr.write(`oidc_provider_server: ${error.stack ?? error}\n`);
  process.exit(1);
});
