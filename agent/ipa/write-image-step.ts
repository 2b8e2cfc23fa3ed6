/**
 * The write_image deploy step: image.write for each of Ironic's URLs in turn until one downloads
 * (IPA tries the next URL only when a download fails; a checksum mismatch or a write error ends
 * the step), then IPA's result text with the disk identifier Ironic records as the root uuid.
 */
import { readDiskIdentifier } from '../hardware/generic/disks/disk-identifier.js';
import { AgentError, serializeError } from '../util/errors.js';
import type { IpaCommandContext } from './command-context.js';
import { planImageWrite } from './image-info.js';
import type { JsonObject } from './node.js';

/** Failures where another URL may succeed: the bytes never arrived, so nothing else is wrong. */
const NEXT_URL_CODES = new Set(['DOWNLOAD_FAILED', 'DOWNLOAD_TRUNCATED', 'DOWNLOAD_RESTART_REQUIRED']);

export const runWriteImage = async (
  args: JsonObject,
  node: JsonObject | null,
  context: IpaCommandContext,
): Promise<JsonObject> => {
  const plan = planImageWrite(args, node);
  context.log.info(
    { image_id: plan.imageId, urls: plan.attempts.length, root_device_hints_from: plan.hintsSource },
    'writing the image',
  );
  // A failed write leaves the disk wiped: nothing this boot wrote is there any more.
  context.deploy.writtenDevice = null;
  context.deploy.imageId = null;
  const failures: Array<{ url: string; code: string; message: string }> = [];
  let written: JsonObject | null = null;
  for (const params of plan.attempts) {
    try {
      written = await context.runRegistry('image.write', params);
      break;
    } catch (error) {
      const serialized = serializeError(error);
      failures.push({ url: params.url, code: serialized.code, message: serialized.message });
      const last = failures.length === plan.attempts.length;
      if (!NEXT_URL_CODES.has(serialized.code) || last) {
        if (failures.length === 1) throw error;
        throw new AgentError(
          AgentError.is(error) ? error.code : 'INTERNAL',
          `${failures.length} image URLs failed; the last one (${params.url}): ${serialized.message}`,
          { details: { ...serialized.details, attempts: failures } },
        );
      }
      context.log.warn({ url: params.url, error: serialized }, 'image URL failed; trying the next one');
    }
  }
  const device = written?.device;
  if (typeof device !== 'string' || device === '')
    throw new AgentError('INTERNAL', 'image.write succeeded without naming the device it wrote', {
      details: { result: written },
    });
  context.deploy.writtenDevice = device;
  context.deploy.imageId = plan.imageId;
  let rootUuid = 'None';
  try {
    rootUuid = await readDiskIdentifier(device);
  } catch (error) {
    // The image is written; Ironic asks for the identifier again (get_partition_uuids) before using it.
    context.log.warn({ device, error: serializeError(error) }, 'disk identifier unreadable after the write');
  }
  return {
    result: `prepare_image: image (${plan.imageId}) written to device ${device} root_uuid=${rootUuid}`,
  };
};
