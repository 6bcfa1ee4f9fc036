// The operations workbook, under the Application Insights resource's Workbooks (and Monitor >
// Workbooks): a record's story, failures by hour, poll lag and queue depths. Its content is
// infra/workbooks/operations.workbook.json, as the portal's Advanced Editor shows it; the ids of
// this deployment's resources replace the placeholders there. docs/operations.md says how to read it.

@description('Name of the workbook in the portal.')
param displayName string

@description('Region of the workbook (that of Application Insights).')
param location string

@description('Tags for the workbook.')
param tags object = {}

@description('Resource id of the Application Insights component the workbook queries and is listed under.')
param appInsightsId string

@description('Resource id of the Service Bus namespace whose queue metrics the workbook charts.')
param serviceBusNamespaceId string

var content = loadTextContent('../workbooks/operations.workbook.json')
var serializedData = replace(replace(content, '__APP_INSIGHTS_ID__', appInsightsId), '__SERVICE_BUS_NAMESPACE_ID__', serviceBusNamespaceId)

resource workbook 'Microsoft.Insights/workbooks@2023-06-01' = {
  // A workbook's name is a GUID: the same one on every deployment, so a redeployment updates it.
  name: guid(appInsightsId, 'ml-connector-operations-workbook')
  location: location
  tags: tags
  kind: 'shared'
  properties: {
    displayName: displayName
    description: 'A record\'s story, failures by hour, poll lag and queue depths of ml-connector.'
    category: 'workbook'
    // The portal lists a workbook under the resource its sourceId names, written in lower case.
    sourceId: toLower(appInsightsId)
    serializedData: serializedData
    version: 'Notebook/1.0'
  }
}

output id string = workbook.id
output name string = workbook.name
