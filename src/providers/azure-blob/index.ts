export {
  AzureBlobProvider,
  type AzureBlobProviderOptions,
  createAzureBlobProvider,
  toProviderError,
} from './azure-blob-provider.js';
