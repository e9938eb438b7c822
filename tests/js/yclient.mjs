// A stock Yjs client for the integration tests: the `yjs` document with the unmodified
// `y-websocket` provider, exactly as a browser would use them (with the `ws` package standing in
// for the browser's WebSocket).
//
// Usage: node yclient.mjs <server ws url, e.g. ws://127.0.0.1:8080/docs/c_123> <doc name> <token>
// It edits the shared text `text` on commands read from stdin, one JSON object per line:
//   {"op":"insert","index":0,"text":"你好"}   {"op":"delete","index":0,"len":2}
//   {"op":"text"}   {"op":"quit"}
// and reports on stdout, one JSON object per line:
//   {"ev":"synced"}  {"ev":"text","text":"..."}  {"ev":"close","code":4003,"reason":"forbidden"}
// Offsets are UTF-16 code units, as everywhere in JavaScript.
import * as Y from 'yjs'
import { WebsocketProvider } from 'y-websocket'
import WebSocket from 'ws'
import readline from 'node:readline'

const [url, docName, token] = process.argv.slice(2)
const out = (o) => process.stdout.write(JSON.stringify(o) + '\n')

const doc = new Y.Doc()
const text = doc.getText('text')
const provider = new WebsocketProvider(url, docName, doc, {
  WebSocketPolyfill: WebSocket,
  params: { token },
  disableBc: true,
  maxBackoffTime: 500
})
provider.awareness.setLocalStateField('user', { name: 'node client' })
provider.on('sync', (synced) => { if (synced) out({ ev: 'synced' }) })
provider.on('connection-close', (event) => {
  out({ ev: 'close', code: event ? event.code : null, reason: event ? String(event.reason) : null })
})
text.observe(() => out({ ev: 'text', text: text.toString() }))

const rl = readline.createInterface({ input: process.stdin })
rl.on('line', (line) => {
  let cmd
  try { cmd = JSON.parse(line) } catch { return out({ ev: 'error', message: 'bad command' }) }
  switch (cmd.op) {
    case 'insert': text.insert(cmd.index, cmd.text); break
    case 'delete': text.delete(cmd.index, cmd.len); break
    case 'text': out({ ev: 'text', text: text.toString() }); break
    case 'quit':
      provider.destroy()
      doc.destroy()
      process.exit(0)
  }
})
rl.on('close', () => { provider.destroy(); process.exit(0) })
