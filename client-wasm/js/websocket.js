// The viewer protocol over one WebSocket (meshcast_proto::mux), shaped as
// the part of a WebTransport the client uses: ready, closed,
// createBidirectionalStream() (the control stream) and
// incomingUnidirectionalStreams (one ReadableStream per delivery), close().
// Messages: 0x00 control bytes; 0x01 varint id, bytes of delivery id (the
// first opens it); 0x02 varint id, its end; 0x03 varint id, abandoned.
export function openWebSocketTransport(url) {
  const ws = new WebSocket(url);
  ws.binaryType = 'arraybuffer';
  let control = null; // the control stream's controller, once created
  let early = []; // control bytes that came before it
  const deliveries = new Map(); // id → controller
  let highest = 0; // the highest delivery id opened: lower unknown ones ended
  let incoming;
  const incomingUnidirectionalStreams = new ReadableStream({ start: (c) => (incoming = c) });
  let settleClosed;
  const closed = new Promise((resolve) => (settleClosed = resolve));
  let opened = false;
  const ready = new Promise((resolve, reject) => {
    ws.onopen = () => {
      opened = true;
      resolve();
    };
    ws.onerror = () => {
      if (!opened) reject(new Error(`WebSocket ${url} failed`));
    };
  });
  ready.catch(() => {});
  const fail = (why) => {
    try {
      ws.close(1002, why.slice(0, 100));
    } catch {
      /* already closing */
    }
  };
  ws.onmessage = (event) => {
    if (!(event.data instanceof ArrayBuffer)) return fail('a text message');
    const bytes = new Uint8Array(event.data);
    if (!bytes.length) return fail('an empty message');
    const tag = bytes[0];
    if (tag === 0) {
      const chunk = bytes.slice(1);
      if (control) control.enqueue(chunk);
      else early.push(chunk);
      return;
    }
    let id = 0;
    let i = 1;
    for (let shift = 0; ; shift += 7) {
      if (i >= bytes.length || shift > 49) return fail('a bad stream id');
      const b = bytes[i++];
      id += (b & 0x7f) * 2 ** shift;
      if (!(b & 0x80)) break;
    }
    let stream = deliveries.get(id);
    if (tag === 1) {
      if (!stream) {
        if (id <= highest) return; // ended or abandoned already
        highest = id;
        incoming.enqueue(new ReadableStream({ start: (c) => (stream = c) }));
        deliveries.set(id, stream);
      }
      stream.enqueue(bytes.slice(i));
    } else if (tag === 2 || tag === 3) {
      if (i !== bytes.length) return fail('bytes after a stream end');
      if (!stream) return;
      deliveries.delete(id);
      if (tag === 2) stream.close();
      else stream.error(new Error('the gateway abandoned the delivery'));
    } else {
      fail(`unknown message tag ${tag}`);
    }
  };
  ws.onclose = (event) => {
    const gone = new Error('the WebSocket closed');
    for (const stream of deliveries.values()) stream.error(gone);
    deliveries.clear();
    try {
      control?.close();
      incoming.close();
    } catch {
      /* already closed */
    }
    settleClosed({ closeCode: event.code, reason: event.reason || 'the WebSocket closed' });
  };
  return {
    ready,
    closed,
    incomingUnidirectionalStreams,
    async createBidirectionalStream() {
      await ready;
      const readable = new ReadableStream({
        start: (c) => {
          control = c;
          for (const chunk of early) c.enqueue(chunk);
          early = [];
        },
      });
      const writable = new WritableStream({
        write: (chunk) => {
          if (ws.readyState !== WebSocket.OPEN) throw new Error('the WebSocket closed');
          const message = new Uint8Array(chunk.byteLength + 1);
          message.set(new Uint8Array(chunk.buffer, chunk.byteOffset, chunk.byteLength), 1);
          ws.send(message);
        },
      });
      return { readable, writable };
    },
    close(info) {
      try {
        ws.close(1000, String(info?.reason ?? '').slice(0, 100));
      } catch {
        /* already closed */
      }
    },
  };
}
