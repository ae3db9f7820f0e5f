// @node-oauth/oauth2-server with the client-credentials grant, served over plain HTTP on
// 127.0.0.1 by Node's http module.
//
//     node oauth2_server.mjs --clients FILE
//
// Routes:
//   POST /token       The token endpoint. Responses are JSON, as the library writes them.
//   POST /token-form  The same endpoint, but a successful response is sent form-encoded
//                     (application/x-www-form-urlencoded), as some older servers do.
//   anything else     404 with a plain-text body, as a router without a match sends.
//
// Clients may request any scope listed in their `scope` entry; a client with `omit_scope`
// gets tokens whose response leaves `scope` out. The library compares the Basic
// credentials as received, without the form-decoding that RFC 6749 section 2.3.1
// requires, so secrets with reserved characters only work with client_secret_post.

import { timingSafeEqual } from 'node:crypto';
import http from 'node:http';

import OAuth2Server from '@node-oauth/oauth2-server';

import {
  RequestLog, closeOnSignal, listenOnLoopback, parseOptions, printReady, readClients,
  startStatsServer,
} from './common.mjs';

const { InvalidScopeError, Request, Response } = OAuth2Server;

const defaultLifetimeSeconds = 600;
const maxBodyBytes = 64 * 1024;

function secretsEqual(expected, actual) {
  const a = Buffer.from(expected, 'utf8');
  const b = Buffer.from(actual ?? '', 'utf8');
  return a.length === b.length && timingSafeEqual(a, b);
}

function makeModel(clients) {
  const byId = new Map(clients.map((c) => [c.client_id, c]));
  return {
    async getClient(clientId, clientSecret) {
      const entry = byId.get(clientId);
      if (!entry || !secretsEqual(entry.client_secret, clientSecret)) {
        return null;
      }
      return {
        id: entry.client_id,
        grants: ['client_credentials'],
        accessTokenLifetime: entry.token_lifetime ?? defaultLifetimeSeconds,
        allowedScopes: new Set((entry.scope ?? '').split(' ').filter(Boolean)),
        omitScope: entry.omit_scope === true,
      };
    },

    async getUserFromClient(client) {
      return { id: `client:${client.id}` };
    },

    // Scopes are checked here rather than in validateScope, which the library also calls
    // for requests without a scope and then rejects any falsy result.
    async saveToken(token, client, user) {
      for (const scope of token.scope ?? []) {
        if (!client.allowedScopes.has(scope)) {
          throw new InvalidScopeError(`Invalid scope: ${scope} is not allowed for this client`);
        }
      }
      return { ...token, scope: client.omitScope ? undefined : token.scope, client, user };
    },
  };
}

function readBody(req) {
  return new Promise((resolve, reject) => {
    const chunks = [];
    let size = 0;
    req.on('data', (chunk) => {
      size += chunk.length;
      if (size > maxBodyBytes) {
        reject(new Error('request body too large'));
        req.destroy();
        return;
      }
      chunks.push(chunk);
    });
    req.on('end', () => resolve(Buffer.concat(chunks).toString('utf8')));
    req.on('error', reject);
  });
}

function send(res, status, headers, contentType, body) {
  res.writeHead(status, { ...headers, 'content-type': contentType });
  res.end(body);
}

async function handleToken(oauth, req, res, entry, formResponse) {
  const text = await readBody(req);
  const isForm = (req.headers['content-type'] ?? '').startsWith('application/x-www-form-urlencoded');
  const body = isForm ? Object.fromEntries(new URLSearchParams(text)) : {};
  RequestLog.setParameters(entry, body);

  const request = new Request({ method: req.method, query: {}, headers: req.headers, body });
  const response = new Response({ headers: {} });
  try {
    await oauth.token(request, response);
  } catch (error) {
    const status = error.code ?? 500;
    const errorBody = { error: error.name ?? 'server_error', error_description: error.message };
    send(res, status, response.headers, 'application/json', JSON.stringify(errorBody));
    return;
  }

  if (formResponse) {
    const fields = Object.entries(response.body).map(([name, value]) => [name, String(value)]);
    send(res, response.status, response.headers, 'application/x-www-form-urlencoded',
         new URLSearchParams(fields).toString());
    return;
  }
  send(res, response.status, response.headers, 'application/json', JSON.stringify(response.body));
}

async function main() {
  const options = parseOptions(process.argv.slice(2), ['clients']);
  const oauth = new OAuth2Server({
    model: makeModel(readClients(options.clients)),
    accessTokenLifetime: defaultLifetimeSeconds,
  });

  const log = new RequestLog();
  const statsPort = await startStatsServer(log);

  const server = http.createServer((req, res) => {
    const entry = log.add(req);
    const isTokenRoute = entry.path === '/token' || entry.path === '/token-form';
    if (req.method !== 'POST' || !isTokenRoute) {
      req.resume();
      send(res, 404, {}, 'text/plain; charset=utf-8', `Cannot ${req.method} ${entry.path}\n`);
      return;
    }
    handleToken(oauth, req, res, entry, entry.path === '/token-form').catch((error) => {
      process.stderr.write(`oauth2_server: ${error.message}\n`);
      if (!res.headersSent) {
        send(res, 500, {}, 'text/plain; charset=utf-8', 'internal error\n');
      }
    });
  });
  const port = await listenOnLoopback(server);
  closeOnSignal([server]);

  printReady({
    token_url: `http://127.0.0.1:${port}/token`,
    stats_url: `http://127.0.0.1:${statsPort}/stats`,
  });
}

main().catch((error) => {
  process.stderr.write(`oauth2_server: ${error.stack ?? error}\n`);
  process.exit(1);
});
