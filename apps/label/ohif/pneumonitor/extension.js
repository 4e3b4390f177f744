/**
 * OHIF extension "pneumonitor-monai-label": the MONAI Label panel of the radiograph mode (mode.js).
 *
 * Loaded by OHIF at start-up as an ES module (app-config.js), next to the prebuilt OHIF of build.sh: no webpack
 * build, so it has no React of its own. The panel is a plain DOM widget (panel.js) mounted into the host element
 * that the panel component returns. That element is written as React's element object (type, props, ref under the
 * `Symbol.for('react.element')` tag, React 18's element format, the React of @ohif/app 3.12); its ref callback is
 * stable, so React mounts the widget once per panel instance and tears it down when the panel closes.
 */
import { MonaiLabelPanel } from './panel.js';

export const EXTENSION_ID = 'pneumonitor-monai-label';
export const PANEL_ID = 'monai-label';

const REACT_ELEMENT = Symbol.for('react.element');

/** A React 18 host element (`<div className=... ref=...>`) without importing React. */
function hostDiv(className, ref) {
  return { $$typeof: REACT_ELEMENT, type: 'div', key: null, ref, props: { className }, _owner: null, _store: {} };
}

export default {
  id: EXTENSION_ID,
  version: '1.0.0',

  getPanelModule({ servicesManager, commandsManager, extensionManager }) {
    const context = { servicesManager, commandsManager, extensionManager };
    const widgets = new WeakMap();
    const mount = (element) => {
      if (element && !widgets.has(element)) {
        widgets.set(element, new MonaiLabelPanel(element, context));
      }
    };
    const PanelMonaiLabel = () => hostDiv('pneumonitor-monai-label', mount);
    return [
      {
        name: PANEL_ID,
        iconName: 'tab-segmentation',
        iconLabel: 'MONAI Label',
        label: 'MONAI Label',
        component: PanelMonaiLabel,
      },
    ];
  },
};
