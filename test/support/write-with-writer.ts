/**
 * Child-process helper for the block-writer tests: writes IMAGE_FILE to DEVICE with
 * openBlockWriter({direct: true}) and prints {bytesWritten, direct, warnings} as JSON. Run under
 * `node --jitless` it has no WebAssembly, hence no aligned buffers: the O_DIRECT fallback path.
 */
import { readFile } from 'node:fs/promises';
import { Writable } from 'node:stream';
import { pino } from 'pino';
import { openBlockWriter } from '../../agent/image/block-writer.js';

const [device, imageFile] = process.argv.slice(2);
if (!device || !imageFile) throw new Error('usage: write-with-writer DEVICE IMAGE_FILE');

const warnings: string[] = [];
const sink = new Writable({
  write(line: Buffer, _encoding, callback) {
    const record = JSON.parse(line.toString()) as { msg?: string };
    warnings.push(record.msg ?? '');
    callback();
  },
});
const logger = pino({ level: 'warn' }, sink);
const image = await readFile(imageFile);
const writer = await openBlockWriter(device, { direct: true, logger });
for (let offset = 0; offset < image.length; offset += 1024 * 1024) {
  await writer.write(image.subarray(offset, offset + 1024 * 1024));
}
const { bytesWritten } = await writer.finish();
process.stdout.write(JSON.stringify({ bytesWritten, direct: writer.direct, warnings }));
