// A stock Yjs client for the integration tests: the `yjs` document with the unmodified
// `y-websocket` provider, exactly as a browser would use them (with the `ws` package standing in
// for the browser's WebSocket).
//
// Usage: node yclient.mjs <server ws url, e.g. ws://127.0.0.1:8080/docs/c_123> <doc name> <token>
// It edits the shared text `text` on commands read from stdin, one JSON object per line:
//   {"op":"insert","index":0,"text":"你好"}   {"op":"delete","index":0,"len":2}
//   {"op":"text"}   {"op":"state"}   {"op":"quit"}
//   {"op":"awareness","state":{...}}        sets this client's awareness state (null: removes it)
//   {"op":"awareness_states"}               reports the awareness states now
//   {"op":"random","seed":7,"count":300,"maxDelayMs":3}
//       makes `count` random edits (inserts of Chinese, emoji and ASCII, deletes of whole code
//       points at UTF-16 offsets) chosen by a generator seeded with `seed`, each its own
//       transaction, pausing 0..maxDelayMs between them, without waiting for anyone
// and reports on stdout, one JSON object per line:
//   {"ev":"synced"}  {"ev":"text","text":"..."}  {"ev":"close","code":4003,"reason":"forbidden"}
//   {"ev":"state","text":"...","sv":"<state vector, Yjs v1, base64>"}
//   {"ev":"awareness","self":<own client id>,"states":{"<client id>":<state>,...}} on every
//       change of the provider's awareness states and on request (own state included)
//   {"ev":"random_done","ops":300}
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

const reportAwareness = () => {
  const states = {}
  for (const [client, state] of provider.awareness.getStates()) states[String(client)] = state
  out({ ev: 'awareness', self: doc.clientID, states })
}
provider.awareness.on('change', reportAwareness)

// xorshift32: small, seedable, the same sequence on every run for a seed.
const rng = (seed) => {
  let x = (seed >>> 0) || 0x9e3779b9
  return (n) => {
    x ^= x << 13; x >>>= 0
    x ^= x >>> 17
    x ^= x << 5; x >>>= 0
    return x % n
  }
}
const PIECES = ['a', 'Z', '7', ' ', '调', '解', '协议', '退款', '😀', '🎉', '👍🏽', 'é', 'ok', '。']

// Moves a UTF-16 offset off the middle of a surrogate pair.
const boundary = (s, i) => {
  if (i > 0 && i < s.length) {
    const c = s.charCodeAt(i)
    if (c >= 0xdc00 && c <= 0xdfff) return i - 1
  }
  return i
}

const randomEdits = async ({ seed, count, maxDelayMs }) => {
  const next = rng(seed)
  for (let k = 0; k < count; k++) {
    const s = text.toString()
    if (s.length === 0 || next(3) !== 0) {
      text.insert(boundary(s, next(s.length + 1)), PIECES[next(PIECES.length)])
    } else {
      const at = boundary(s, next(s.length))
      // One to three whole code points.
      let end = at
      for (let n = 1 + next(3); n > 0 && end < s.length; n--) {
        end += s.codePointAt(end) > 0xffff ? 2 : 1
      }
      text.delete(at, end - at)
    }
    const pause = maxDelayMs > 0 ? next(maxDelayMs + 1) : 0
    await new Promise((resolve) => pause > 0 ? setTimeout(resolve, pause) : setImmediate(resolve))
  }
  out({ ev: 'random_done', ops: count })
}

const rl = readline.createInterface({ input: process.stdin })
rl.on('line', (line) => {
  let cmd
  try { cmd = JSON.parse(line) } catch { return out({ ev: 'error', message: 'bad command' }) }
  switch (cmd.op) {
    case 'insert': text.insert(cmd.index, cmd.text); break
    case 'delete': text.delete(cmd.index, cmd.len); break
    case 'text': out({ ev: 'text', text: text.toString() }); break
    case 'state':
      out({
        ev: 'state',
        text: text.toString(),
        sv: Buffer.from(Y.encodeStateVector(doc)).toString('base64')
      })
      break
    case 'awareness': provider.awareness.setLocalState(cmd.state); break
    case 'awareness_states': reportAwareness(); break
    case 'random': randomEdits(cmd); break
    case 'quit':
      provider.destroy()
      doc.destroy()
      process.exit(0)
  }
})
rl.on('close', () => { provider.destroy(); process.exit(0) })
