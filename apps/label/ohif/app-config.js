/**
 * OHIF configuration of the pneumonitor label app (apps/label/ohif/build.sh copies it into dist/).
 *
 * OHIF runs at /ohif/ on the MONAI Label server and reads the studies through the server's DICOMweb proxy
 * (/proxy/dicom/...: the server's --studies root, e.g. Orthanc), so the viewer, the MONAI Label API and the
 * images share one origin. The pneumonitor extension and mode are ES modules loaded at start-up (pneumonitor/).
 */
window.config = {
  routerBasename: '/ohif',
  extensions: ['/ohif/pneumonitor/extension.js'],
  modes: ['/ohif/pneumonitor/mode.js'],
  showStudyList: true,
  maxNumberOfWebWorkers: 2,
  showWarningMessageForCrossOrigin: false,
  showCPUFallbackMessage: false,
  showLoadingIndicator: true,
  strictZSpacingForVolumeViewport: true,
  investigationalUseDialog: { option: 'never' },
  defaultDataSourceName: 'dicomweb',
  dataSources: [
    {
      namespace: '@ohif/extension-default.dataSourcesModule.dicomweb',
      sourceName: 'dicomweb',
      configuration: {
        friendlyName: 'DICOMweb through the MONAI Label server',
        name: 'monailabel-proxy',
        wadoUriRoot: '/proxy/dicom/wado',
        qidoRoot: '/proxy/dicom/qido',
        wadoRoot: '/proxy/dicom/wado',
        qidoSupportsIncludeField: false,
        supportsReject: false,
        imageRendering: 'wadors',
        thumbnailRendering: 'wadors',
        enableStudyLazyLoad: true,
        supportsFuzzyMatching: false,
        supportsWildcard: false,
        omitQuotationForMultipartRequest: true,
        bulkDataURI: { enabled: true },
      },
    },
  ],
};
