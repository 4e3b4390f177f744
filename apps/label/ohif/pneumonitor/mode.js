/**
 * OHIF mode "MONAI Label (radiographs)", route /ohif/monai-label?StudyInstanceUIDs=<study>.
 *
 * It is OHIF's own segmentation mode (@ohif/mode-segmentation of the same build: stack viewport for single-frame
 * images, labelmap segmentation on stacks since OHIF 3.9, the Brush / Eraser / Threshold toolbox, DICOM SEG display
 * sets), with four changes: it is offered for DX and CR studies only, its right side shows the MONAI Label panel
 * (extension.js) above the labelmap segmentation panel (its toolbox: Brush, Eraser, ...), SEG series get no
 * viewport of their own (the panel lays them over their radiograph), and it has its own route. Building on the shipped mode
 * instead of copying it keeps the tool groups and toolbar definitions those of the pinned OHIF release.
 *
 * Loaded by OHIF at start-up through app-config.js (`modes: ['/ohif/pneumonitor/mode.js']`).
 */
import { EXTENSION_ID, PANEL_ID } from './extension.js';

export const MODE_ID = 'pneumonitor-monai-label';
const RADIOGRAPH_MODALITIES = ['DX', 'CR'];

async function modeFactory({ modeConfiguration, loadModules }) {
  const [segmentationMode] = await loadModules(['@ohif/mode-segmentation']);
  const base = await segmentationMode.modeFactory({ modeConfiguration, loadModules });
  const [route] = base.routes;
  return {
    ...base,
    id: MODE_ID,
    routeName: 'monai-label',
    displayName: 'MONAI Label (radiographs)',
    isValidMode: ({ modalities }) => ({
      valid: modalities.split('\\').some((m) => RADIOGRAPH_MODALITIES.includes(m)),
      description: 'MONAI Label annotation of projection radiographs: the study needs a DX or CR series',
    }),
    routes: [
      {
        ...route,
        path: 'monai-label',
        layoutTemplate: (args) => {
          const layout = route.layoutTemplate(args);
          const labelmapPanel = layout.props.rightPanels[0];
          // OHIF's SEG viewport loads a SEG through @cornerstonejs/adapters, which needs a plane orientation that a
          // SEG of a projection radiograph does not have (it would hang on "Loading SEG..."); the panel opens those
          // SEGs over their image instead (panel.js, openSeg), so SEG series are listed but get no viewport of their own
          layout.props.viewports = layout.props.viewports.filter((v) => !v.namespace.includes("dicom-seg"));
          // one tab, the MONAI Label panel stacked above the labelmap panel (OHIF combines the panels of an array):
          // the score stays in view while the annotator edits, and the mode's switch to the segmentation panel when
          // a segmentation appears has no other tab to switch to
          layout.props.rightPanels = [[`${EXTENSION_ID}.panelModule.${PANEL_ID}`, labelmapPanel]];
          layout.props.rightPanelClosed = false;
          return layout;
        },
      },
    ],
    // base.extensions only: OHIF imports each key of this list by name when the route opens, and the pneumonitor
    // extension is no package name but a module that app-config.js registered at start-up
  };
}

export default {
  id: MODE_ID,
  modeFactory,
};
